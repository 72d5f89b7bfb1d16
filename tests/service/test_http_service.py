"""The bid endpoint's service semantics: concurrent requests batched, several imps answered in
one response, first-price shading, the time budget, and no 5xx whatever fails inside."""

from __future__ import annotations

import asyncio
import json

from aiohttp.test_utils import TestClient, TestServer

from agent_service.adapters.memory_bus import MemoryBus
from agent_service.adapters.memory_store import MemoryStore
from agent_service.config import GaelpConfig
from agent_service.contracts.codec import decode, decode_bid_request
from agent_service.contracts.events import Decision
from agent_service.contracts.openrtb import BidResponse
from agent_service.errors import StoreError
from agent_service.http.app import BidBatcher, build_http_app
from agent_service.pipeline.decide import DecideResult
from tests.flowkit import T0, FlowKit

NOON = T0 + 12 * 3_600_000


async def _client(kit: FlowKit, **kw: object) -> TestClient:
    app = build_http_app(kit.flow.decider, MemoryBus(), kit.topics.decisions, kit.metrics, clock=lambda: NOON,
                         admin_token="t", **kw)  # type: ignore[arg-type]
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def _body(rid: str, imps: int = 1, **kw: object) -> dict[str, object]:
    # A generous tmax: these tests are about the answer, and a loaded CI machine must not turn
    # it into a timely no-bid (tmax handling has tests of its own).
    return {"id": rid, "imp": [{"id": f"i{k}", "bidfloor": 0.5} for k in range(imps)], "tmax": 10_000,
            "device": {"ifa": f"dev-{rid}", "devicetype": 4}, "site": {"cat": ["IAB1"]}, **kw}


async def test_concurrent_requests_are_decided_in_batches() -> None:
    kit = FlowKit(MemoryStore(), GaelpConfig().replace("budget", daily_usd=1000.0))
    calls: list[int] = []
    decide = kit.flow.decider.decide

    async def counting(items, deadlines=None):  # type: ignore[no-untyped-def]
        calls.append(len(items))
        await asyncio.sleep(0.01)  # a slow store: the next requests queue meanwhile
        return await decide(items, deadlines)

    kit.flow.decider.decide = counting  # type: ignore[method-assign]
    client = await _client(kit)
    try:
        answers = await asyncio.gather(*(client.post("/openrtb2/bid", json=_body(f"c{i}")) for i in range(40)))
        assert {a.status for a in answers} <= {200, 204}
        for a, i in zip(answers, range(40), strict=True):
            if a.status == 200:
                assert decode(await a.read(), BidResponse).id == f"c{i}"  # each gets its own answer
        assert sum(calls) == 40 and len(calls) < 40 and max(calls) > 1
    finally:
        await client.close()


async def test_requests_arriving_within_the_linger_share_one_pass() -> None:
    async def passes(linger_s: float) -> list[int]:
        kit = FlowKit(MemoryStore(), GaelpConfig().replace("budget", daily_usd=1000.0))
        calls: list[int] = []
        decide = kit.flow.decider.decide

        async def counting(items, deadlines=None):  # type: ignore[no-untyped-def]
            calls.append(len(items))
            return await decide(items, deadlines)

        lingering, release = asyncio.Event(), asyncio.Event()

        async def linger(_: float) -> None:  # held open until the test's requests have queued
            lingering.set()
            await release.wait()

        kit.flow.decider.decide = counting  # type: ignore[method-assign]
        batcher = BidBatcher(kit.flow.decider, MemoryBus(), kit.topics.decisions, kit.metrics, linger_s=linger_s,
                             linger=linger)
        await batcher.start()
        reqs = [decode_bid_request(json.dumps(_body(f"l{i}")).encode()) for i in range(3)]

        def ask(i: int) -> asyncio.Task[DecideResult]:
            return asyncio.create_task(batcher.decide(reqs[i], NOON, kit.flow.decider.timer() + 10.0))
        try:
            if linger_s == 0:
                for i in range(3):  # one after another: each is decided before the next arrives
                    await ask(i)
            else:
                first = ask(0)
                await asyncio.wait_for(lingering.wait(), 10)  # the first request's batch is filling
                rest = [ask(1), ask(2)]
                await asyncio.sleep(0)  # the two join the queue
                release.set()
                await asyncio.gather(first, *rest)
        finally:
            await batcher.stop()
        return calls

    assert await passes(0.0) == [1, 1, 1]  # decided as they come
    assert await passes(0.5) == [3]  # one pass for all three


async def test_several_imps_answered_in_one_response() -> None:
    kit = FlowKit(MemoryStore(), GaelpConfig().replace("budget", daily_usd=1000.0))
    client = await _client(kit)
    try:
        resp = await client.post("/openrtb2/bid", json=_body("multi", imps=3))
        assert resp.status == 200
        br = decode(await resp.read(), BidResponse)
        assert br.cur == "USD" and len(br.seatbid) == 1
        assert sorted(b.impid for b in br.seatbid[0].bid) == ["i0", "i1", "i2"]
        assert len({b.id for b in br.seatbid[0].bid}) == 3
    finally:
        await client.close()


async def test_first_price_requests_get_shaded_bids() -> None:
    kit = FlowKit(MemoryStore(), GaelpConfig().replace("budget", daily_usd=1000.0))
    client = await _client(kit)
    try:
        prices: dict[int, list[float]] = {1: [], 2: []}
        for i in range(30):
            for at in (1, 2):
                resp = await client.post("/openrtb2/bid", json=_body(f"a{at}-{i}", at=at))
                if resp.status == 200:
                    prices[at].append(decode(await resp.read(), BidResponse).seatbid[0].bid[0].price)
        assert prices[1] and prices[2]
        assert sum(prices[1]) / len(prices[1]) < sum(prices[2]) / len(prices[2])
        assert min(prices[1]) >= 0.5
    finally:
        await client.close()


class _Timer:
    """An injected deadline clock: the tests move it instead of sleeping."""

    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


async def test_a_spent_time_budget_is_a_no_bid() -> None:
    kit = FlowKit(MemoryStore(), GaelpConfig().replace("budget", daily_usd=1000.0))
    decide = kit.flow.decider.decide
    kit.flow.decider.timer = timer = _Timer()

    async def slow(items, deadlines=None):  # type: ignore[no-untyped-def]
        timer.t += 0.03  # the pass starts 30 ms after the request arrived
        return await decide(items, deadlines)

    kit.flow.decider.decide = slow  # type: ignore[method-assign]
    client = await _client(kit, network_allowance_ms=5)
    try:
        assert (await client.post("/openrtb2/bid", json=_body("t1", tmax=10))).status == 204
        assert (await client.post("/openrtb2/bid", json=_body("t2", tmax=500))).status == 200
        ledger = await kit.store.budget("c", NOON // 86_400_000)
        text = kit.metrics.exposition().decode()
        assert 'reason="tmax"' in text or 'reason="tmax_late"' in text
        assert ledger.reserved > 0  # only t2's reservation is held
    finally:
        await client.close()


async def test_a_bid_decided_after_tmax_is_withdrawn_freed_and_logged_as_a_no_bid() -> None:
    kit = FlowKit(MemoryStore(), GaelpConfig().replace("budget", daily_usd=1000.0))
    decide = kit.flow.decider.decide
    kit.flow.decider.timer = timer = _Timer()

    async def reserved_then_stalled(items, deadlines=None):  # type: ignore[no-untyped-def]
        results = await decide(items, deadlines)  # decided and reserved in time ...
        timer.t += 0.2  # ... then the pass stalls past the request's tmax
        return results

    kit.flow.decider.decide = reserved_then_stalled  # type: ignore[method-assign]
    bus = MemoryBus()
    app = build_http_app(kit.flow.decider, bus, kit.topics.decisions, kit.metrics, clock=lambda: NOON,
                         admin_token="t", network_allowance_ms=1)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        assert (await client.post("/openrtb2/bid", json=_body("late", tmax=100))).status == 204
    finally:
        await client.close()  # stops the batcher: the decision log is drained
    assert (await kit.store.budget("c", NOON // 86_400_000)).reserved == 0  # its reservation is freed
    stored = (await kit.store.get_decisions(["late:i0"]))["late:i0"]
    assert (stored.bid, stored.no_bid_reason) == (False, "tmax_late")  # and the stored copy says so
    logged = [decode(r.value, Decision) for part in bus._topic(kit.topics.decisions) for r in part]
    assert [(d.id, d.bid, d.no_bid_reason) for d in logged] == [("late:i0", False, "tmax_late")]
    assert 'reason="tmax_late"' in kit.metrics.exposition().decode()


async def test_store_failure_and_internal_errors_are_204_never_5xx() -> None:
    kit = FlowKit(MemoryStore())

    async def broken(*_: object, **__: object) -> None:
        raise StoreError("redis is down")

    kit.store.decide_contexts = broken  # type: ignore[method-assign]
    client = await _client(kit)
    try:
        assert (await client.post("/openrtb2/bid", json=_body("s1"))).status == 204

        async def bug(*_: object, **__: object) -> None:
            raise ZeroDivisionError("a bug")

        kit.store.decide_contexts = bug  # type: ignore[method-assign]
        assert (await client.post("/openrtb2/bid", json=_body("s2"))).status == 204
        assert (await client.post("/openrtb2/bid", data=b"x" * 300_000)).status == 400
        text = kit.metrics.exposition().decode()
        assert 'gaelp_errors_total{reason="bid_path"} 1.0' in text
        assert 'reason="internal"' in text
        assert json.loads(await (await client.post("/openrtb2/bid", data=b"{")).read())["field"] == "$"
    finally:
        await client.close()


async def test_the_decision_log_gathers_passes_for_its_linger_and_loses_none() -> None:
    async def produce_requests(linger_ms: float) -> tuple[int, list[str]]:
        kit = FlowKit(MemoryStore(), GaelpConfig().replace("budget", daily_usd=1000.0))
        bus = MemoryBus()
        calls: list[int] = []
        publish_many = bus.publish_many

        async def counting(topic, records):  # type: ignore[no-untyped-def]
            calls.append(len(records))
            await publish_many(topic, records)

        bus.publish_many = counting  # type: ignore[method-assign]
        app = build_http_app(kit.flow.decider, bus, kit.topics.decisions, kit.metrics, clock=lambda: NOON,
                             admin_token="t", log_linger_ms=linger_ms)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            for i in range(6):  # one at a time: six passes
                assert (await client.post("/openrtb2/bid", json=_body(f"g{i}"))).status in (200, 204)
            for _ in range(10_000):  # without a linger each pass is published on its own: until the sixth
                if linger_ms or sum(calls) == 6:
                    break
                await asyncio.sleep(0.001)
        finally:
            await client.close()
        logged = [decode(r.value, Decision).id for part in bus._topic(kit.topics.decisions) for r in part]
        return len(calls), sorted(logged)

    every_pass, logged = await produce_requests(0.0)
    assert logged == sorted(f"g{i}:i0" for i in range(6))
    gathered, logged_lingering = await produce_requests(1000.0)  # a linger longer than the requests take
    assert logged_lingering == logged  # nothing lost: stopping publishes what waits
    assert gathered == 1 < every_pass  # one produce request for the six passes
