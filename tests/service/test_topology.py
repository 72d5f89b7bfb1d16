"""The Faust topology's agents, run with faust's ``test_context()`` (no broker): each agent is a
thin loop over ``Flow.handle`` that publishes the outputs and applies the effects before the
batch is acked."""

from __future__ import annotations

import asyncio

import pytest

from agent_service.adapters.memory_bus import MemoryBus
from agent_service.adapters.memory_store import MemoryStore
from agent_service.contracts.codec import decode, encode
from agent_service.contracts.events import AuctionResult, DeadLetter, Decision, Experience
from agent_service.ports.bus import BusRecord
from agent_service.ports.store import StateStore
from stream_apps.topology import BatchWorker, build_app
from tests.flowkit import T0, FlowKit, bid_request


async def _agent_run(app, topic: str, values: list[bytes], bus: MemoryBus, outputs: list[str],  # type: ignore[no-untyped-def]
                     expected: int) -> list[BusRecord]:
    """Put ``values`` on the agent of ``topic`` and collect what it publishes on ``outputs`` until
    ``expected`` records came (the agent handles them in a batch once take_events' window passes)."""
    agent = app.agents[f"gaelp.{topic}"]
    reader = bus.consumer(outputs, "check")
    await reader.start()
    records: list[BusRecord] = []
    async with agent.test_context() as ctx:
        for v in values:
            await ctx.put(v, key=b"k")
        deadline = asyncio.get_running_loop().time() + 10.0
        while len(records) < expected and asyncio.get_running_loop().time() < deadline:
            records += await reader.getmany(timeout_ms=0, max_records=100)
            await asyncio.sleep(0.005)
    await reader.stop()
    return records


@pytest.fixture
def world() -> tuple[FlowKit, MemoryBus, StateStore]:
    store = MemoryStore()
    kit = FlowKit(store)
    return kit, MemoryBus(), store


async def test_every_input_topic_has_one_agent(world) -> None:  # type: ignore[no-untyped-def]
    kit, bus, _ = world
    app = build_app(kit.cfg, kit.flow, bus, kit.metrics)
    t = kit.topics
    assert set(app.agents) == {f"gaelp.{n}" for n in (t.bid_requests, t.outside_decisions, t.auction_results,
                                                       t.ad_events, t.identity_links, t.conversions)}


async def test_bid_request_agent_decides_and_logs(world) -> None:  # type: ignore[no-untyped-def]
    kit, bus, _ = world
    app = build_app(kit.cfg, kit.flow, bus, kit.metrics)
    records = await _agent_run(app, kit.topics.bid_requests, [encode(bid_request("r1", "dev1", T0 + 10)), b"{bad"],
                               bus, [kit.topics.decisions, kit.topics.dead_letters], expected=2)
    [dec] = [decode(r.value, Decision) for r in records if r.topic == kit.topics.decisions]
    [letter] = [decode(r.value, DeadLetter) for r in records if r.topic == kit.topics.dead_letters]
    assert dec.id == "r1:1" and dec.device_id != "dev1"  # pseudonymised before it leaves
    assert letter.field == "$"


async def test_auction_result_agent_settles_once_and_emits_experience(world) -> None:  # type: ignore[no-untyped-def]
    kit, bus, store = world
    [out] = [o for o in await kit.handle(kit.topics.bid_requests, bid_request("r2", "dev2", T0 + 10))
             if o.topic == kit.topics.decisions]
    dec = decode(out.value, Decision)
    app = build_app(kit.cfg, kit.flow, bus, kit.metrics)
    res = encode(AuctionResult(id="res-2", event_time=T0 + 60, decision_id=dec.id, won=True, price_paid_micros=777))
    records = await _agent_run(app, kit.topics.auction_results, [res, res], bus, [kit.topics.experience], expected=2)
    ledger = await store.budget("c", T0 // 86_400_000)
    assert (ledger.spent, ledger.reserved) == (777, 0)
    exps = [decode(r.value, Experience) for r in records]
    assert {e.id for e in exps} == {f"{dec.id}:outcome"} and len(exps) == 2 and exps[0] == exps[1]


async def test_batch_worker_commits_each_batch_only_after_its_effects(world) -> None:  # type: ignore[no-untyped-def]
    kit, bus, store = world
    [out] = [o for o in await kit.handle(kit.topics.bid_requests, bid_request("r3", "dev3", T0 + 10))
             if o.topic == kit.topics.decisions]
    dec = decode(out.value, Decision)
    t = kit.topics
    res = encode(AuctionResult(id="res-3", event_time=T0 + 60, decision_id=dec.id, won=True, price_paid_micros=555))
    for value in (res, b"{bad", res):  # a redelivered result and a poison record
        await bus.publish(t.auction_results, b"k", value)
    uncommitted_while_handled: list[int] = []
    handle = kit.flow.handle

    async def watched(topic, records):  # type: ignore[no-untyped-def]
        uncommitted_while_handled.append(bus.lag(kit.cfg.serve.group_id, topic))
        return await handle(topic, records)
    kit.flow.handle = watched  # type: ignore[method-assign]
    worker = BatchWorker(kit.cfg, kit.flow, bus, kit.metrics)
    await worker.start()
    try:
        for _ in range(200):
            if bus.lag(kit.cfg.serve.group_id, t.auction_results) == 0:
                break
            await asyncio.sleep(0.01)
    finally:
        await worker.stop()
    assert uncommitted_while_handled == [3]  # one batch, none of it committed before it was handled
    assert bus.lag(kit.cfg.serve.group_id, t.auction_results) == 0
    ledger = await store.budget("c", T0 // 86_400_000)
    assert (ledger.spent, ledger.reserved) == (555, 0)
    reader = bus.consumer([t.experience, t.dead_letters], "check")
    await reader.start()
    records = await reader.getmany(timeout_ms=0, max_records=100)
    exps = [decode(r.value, Experience) for r in records if r.topic == t.experience]
    [letter] = [decode(r.value, DeadLetter) for r in records if r.topic == t.dead_letters]
    assert [e.id for e in exps] == [f"{dec.id}:outcome"] * 2 and exps[0] == exps[1]
    assert letter.field == "$" and letter.reason


async def test_batch_worker_lets_the_batch_in_hand_finish_and_commit_before_a_rebalance(world) -> None:  # type: ignore[no-untyped-def]
    kit, bus, store = world
    t = kit.topics
    [out] = [o for o in await kit.handle(t.bid_requests, bid_request("r4", "dev4", T0 + 10))
             if o.topic == t.decisions]
    dec = decode(out.value, Decision)
    await bus.publish(t.auction_results, b"k", encode(AuctionResult(
        id="res-4", event_time=T0 + 60, decision_id=dec.id, won=True, price_paid_micros=444)))
    handled: list[tuple[str, int, int]] = []
    in_hand, release = asyncio.Event(), asyncio.Event()
    handle = kit.flow.handle

    async def held(topic, records):  # type: ignore[no-untyped-def]
        handled.extend((r.topic, r.partition, r.offset) for r in records)
        in_hand.set()
        await release.wait()
        return await handle(topic, records)
    kit.flow.handle = held  # type: ignore[method-assign]
    first, second = (BatchWorker(kit.cfg, kit.flow, bus, kit.metrics) for _ in range(2))
    await first.start()
    await asyncio.wait_for(in_hand.wait(), 10)
    joining = asyncio.create_task(second.start())  # the rebalance awaits the first worker's revoke hook
    await asyncio.sleep(0.05)
    assert not joining.done() and bus.lag(kit.cfg.serve.group_id, t.auction_results) == 1
    release.set()
    await asyncio.wait_for(joining, 10)
    assert bus.lag(kit.cfg.serve.group_id, t.auction_results) == 0  # committed before the partitions moved
    for _ in range(20):  # both poll a while: nobody may get the record again
        await asyncio.sleep(0.01)
    await first.stop()
    await second.stop()
    assert handled == [(t.auction_results, 0, 0)]
    ledger = await store.budget("c", T0 // 86_400_000)
    assert (ledger.spent, ledger.reserved) == (444, 0)
