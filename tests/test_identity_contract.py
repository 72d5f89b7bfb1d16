"""The identity port's contract, run against the in-memory and the Redis adapter.

The Redis tests start their own throwaway ``redis-server`` on a free loopback port.
"""

from __future__ import annotations

import random
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from agent_service.adapters.redis_identity import RedisIdentityGraph
from agent_service.identity import (
    GraphLink,
    IdentityConfig,
    InMemoryIdentityGraph,
    LinkStatus,
    Resolution,
    evaluate_identity,
    generate_identity_world,
)
from tests.servers import RedisServer


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with RedisServer() as server:
        yield server.url


def _config(**kw) -> IdentityConfig:
    return IdentityConfig(key_prefix=f"t{uuid.uuid4().hex[:8]}:{{id}}:", **kw)


@pytest.fixture(params=["memory", "redis"])
async def make_graph(request) -> AsyncIterator:
    made = []

    async def make(**kw):
        cfg = _config(**kw)
        if request.param == "memory":
            g = InMemoryIdentityGraph(cfg)
        else:
            g = RedisIdentityGraph.from_url(request.getfixturevalue("redis_url"), cfg, batch_size=3, pipeline_depth=2)
        made.append(g)
        return g

    yield make
    for g in made:
        if isinstance(g, RedisIdentityGraph):
            await g.clear()
        await g.close()


def login(i: str, device: str, user: str) -> GraphLink:
    return GraphLink(i, device, user, "login")


def match(i: str, a: str, b: str, score: float, ip: str = "", kind: str = "ip_ua") -> GraphLink:
    return GraphLink(i, a, b, kind, score, ip)


async def test_deterministic_links_merge_at_once(make_graph) -> None:
    g = await make_graph()
    assert await g.add_links([login("l1", "phone", "alice"), login("l2", "laptop", "alice")]) == [
        LinkStatus.MERGED, LinkStatus.MERGED]
    assert await g.resolve("phone") == Resolution("u:alice", 1.0, 2)
    assert await g.resolve("laptop") == Resolution("u:alice", 1.0, 2)
    assert await g.resolve("stranger") == Resolution("d:stranger", 1.0, 1)


async def test_probabilistic_links_merge_only_above_threshold(make_graph) -> None:
    g = await make_graph(merge_threshold=0.8)
    assert await g.add_links([match("p1", "a", "b", 0.79), match("p2", "c", "d", 0.8)]) == [
        LinkStatus.BELOW_THRESHOLD, LinkStatus.MERGED]
    assert (await g.resolve("a")).person_id == "d:a"
    assert (await g.resolve("b")).person_id == "d:b"
    c, d = await g.resolve("c"), await g.resolve("d")
    assert c.person_id == d.person_id == "d:c" and c.device_count == 2
    assert c.confidence == 1.0 and d.confidence == pytest.approx(0.8)
    assert await g.add_links([match("p1", "a", "b", 0.79)]) == [LinkStatus.BELOW_THRESHOLD]  # a repeat: as stored


async def test_resolving_many_devices_at_once_equals_resolving_each(make_graph) -> None:
    """More devices than one resolve call takes, persons spanning the calls' boundaries."""
    g = await make_graph(merge_threshold=0.8)
    devices = [f"dv{i}" for i in range(1_300)]
    await g.add_links([login(f"l{i}", d, f"u{i % 400}") for i, d in enumerate(devices) if i % 3]
                      + [match(f"m{i}", devices[i], devices[i + 601], 0.9) for i in range(0, 600, 9)])
    many = await g.resolve_many(devices)
    assert many == {d: await g.resolve(d) for d in devices}
    assert len({r.person_id for r in many.values()}) < len(devices) and any(r.device_count > 3 for r in many.values())


async def test_confidence_is_best_product_of_scores_to_the_root(make_graph) -> None:
    g = await make_graph(merge_threshold=0.8)
    await g.add_links([login("l1", "d1", "u"), match("p1", "d1", "d2", 0.9), match("p2", "d2", "d3", 0.9),
                       match("p3", "d1", "d3", 0.85)])
    res = await g.resolve_many(["d1", "d2", "d3"])
    assert {r.person_id for r in res.values()} == {"u:u"}
    assert res["d1"].confidence == 1.0
    assert res["d2"].confidence == pytest.approx(0.9)
    assert res["d3"].confidence == pytest.approx(0.85)  # direct link beats 0.9 * 0.9
    assert res["d3"].device_count == 3


async def test_links_are_idempotent(make_graph) -> None:
    g = await make_graph()
    first = await g.add_links([login("l1", "a", "u"), match("p1", "a", "b", 0.95)])
    again = await g.add_links([login("l1", "a", "u"), match("p1", "a", "b", 0.95)])
    assert first == again == [LinkStatus.MERGED, LinkStatus.MERGED]
    assert (await g.resolve("b")).device_count == 2
    assert await g.add_links([match("p2", "a", "b", 0.9)]) == [LinkStatus.LINKED]


async def test_revoking_a_bridge_splits_and_a_redundant_link_does_not(make_graph) -> None:
    g = await make_graph()
    await g.add_links([login("l1", "a", "u"), login("l2", "b", "u"), match("p1", "b", "c", 0.9),
                       match("p2", "a", "c", 0.95)])
    assert {(await g.resolve(d)).person_id for d in "abc"} == {"u:u"}
    assert await g.revoke("p2") == LinkStatus.LINKED
    assert (await g.resolve("c")).person_id == "u:u"  # still joined through b
    assert (await g.resolve("c")).confidence == pytest.approx(0.9)
    await g.revoke("p1")
    assert await g.resolve("c") == Resolution("d:c", 1.0, 1)
    assert await g.resolve("a") == Resolution("u:u", 1.0, 2)
    await g.revoke("l1")
    assert await g.resolve("a") == Resolution("d:a", 1.0, 1)
    assert await g.add_links([login("l1", "a", "u")]) == [LinkStatus.REVOKED]


async def test_split_gives_new_part_a_deterministic_root(make_graph) -> None:
    g = await make_graph()
    await g.add_links([match("p1", "a", "b", 0.9), match("p2", "b", "c", 0.9), match("p3", "c", "d", 0.9),
                       login("l1", "d", "zed")])
    assert (await g.resolve("a")).person_id == "d:a"  # union by size keeps the larger root
    await g.revoke("p2")
    assert (await g.resolve("a")).person_id == "d:a"
    assert (await g.resolve("c")).person_id == "u:zed"  # user keys are preferred as roots
    assert (await g.resolve("d")).person_id == "u:zed"


async def test_revoke_before_arrival_wins(make_graph) -> None:
    g = await make_graph()
    assert await g.revoke("late") is None
    assert await g.add_links([login("late", "a", "u")]) == [LinkStatus.REVOKED]
    assert (await g.resolve("a")).person_id == "d:a"


async def test_component_size_cap(make_graph) -> None:
    g = await make_graph(max_component_nodes=3)
    out = await g.add_links([login("l1", "a", "u"), login("l2", "b", "u"), login("l3", "c", "u")])
    assert out == [LinkStatus.MERGED, LinkStatus.MERGED, LinkStatus.CAPPED]
    assert (await g.resolve("c")).person_id == "d:c"
    assert (await g.resolve("a")).device_count == 2


async def test_ip_fanout_cap_undoes_merges_through_a_shared_ip(make_graph) -> None:
    g = await make_graph(max_ip_devices=4)
    out = await g.add_links([match("n1", "a", "b", 0.99, "1.2.3.4"), match("n2", "c", "d", 0.99, "1.2.3.4"),
                             match("h1", "a", "b", 0.9, "5.6.7.8"), login("l1", "c", "u"),
                             match("n3", "e", "f", 0.99, "1.2.3.4"), match("n4", "a", "g", 0.99, "1.2.3.4")])
    assert out == [LinkStatus.MERGED, LinkStatus.MERGED, LinkStatus.LINKED, LinkStatus.MERGED,
                   LinkStatus.IP_FANOUT, LinkStatus.IP_FANOUT]
    again = [match("n1", "a", "b", 0.99, "1.2.3.4"), match("n2", "c", "d", 0.99, "1.2.3.4")]
    assert await g.add_links(again) == [LinkStatus.IP_FANOUT] * 2  # repeats report the undone merges as stored
    assert (await g.resolve("b")).person_id == (await g.resolve("a")).person_id  # still joined by the home IP
    assert (await g.resolve("d")).person_id == "d:d"  # only the NAT joined c and d
    assert await g.resolve("c") == Resolution("d:c", 1.0, 1)  # keeps its root and its login
    assert (await g.resolve("e")).person_id == "d:e"


async def test_assignments_and_evaluation(make_graph) -> None:
    g = await make_graph()
    await g.add_links([login("l1", "a", "u"), login("l2", "b", "u"), match("p1", "c", "d", 0.5)])
    got = await g.assignments()
    assert got == {"a": "u:u", "b": "u:u", "c": "d:c", "d": "d:d"}
    score = evaluate_identity(got, {"a": "P1", "b": "P1", "c": "P2", "d": "P2"})
    assert (score.precision, score.recall) == (1.0, 0.5)
    assert score.f1 == pytest.approx(2 / 3)


async def test_adapters_agree_on_a_random_history(redis_url) -> None:
    """Same random links and revocations: identical statuses, persons and confidences — also
    when Redis lost its script cache (SCRIPT FLUSH, as after a restart) before a batch."""
    import redis.asyncio as aioredis

    admin = aioredis.Redis.from_url(redis_url)
    rng = random.Random(5)
    cfg = _config(max_component_nodes=6, max_ip_devices=5)
    mem = InMemoryIdentityGraph(cfg)
    red = RedisIdentityGraph.from_url(redis_url, cfg, batch_size=7, pipeline_depth=3)
    devices = [f"dev{i}" for i in range(40)]
    links: list[GraphLink] = []
    try:
        for step in range(12):
            batch = []
            for _ in range(25):
                k = rng.random()
                if k < 0.2:
                    batch.append(login(f"s{step}-{len(batch)}", rng.choice(devices), f"user{rng.randrange(8)}"))
                else:
                    a, b = rng.sample(devices, 2)
                    ip = rng.choice(["", "10.0.0.1", "10.0.0.2", "100.64.0.1"])
                    batch.append(match(f"s{step}-{len(batch)}", a, b, round(rng.random(), 3), ip,
                                       rng.choice(["ip_ua", "co_occurrence"])))
            if step and rng.random() < 0.7:
                batch.append(batch[0])  # duplicate inside a batch
            links += batch
            if step % 3 == 1:
                await admin.script_flush()
            assert await mem.add_links(batch) == await red.add_links(batch)
            for victim in rng.sample(links, 4):
                assert await mem.revoke(victim.link_id) == await red.revoke(victim.link_id)
            assert await mem.assignments() == await red.assignments()
        assert await mem.resolve_many(devices) == await red.resolve_many(devices)
    finally:
        await red.clear()
        await red.close()
        await admin.aclose()


async def test_synthetic_world_scores_reasonably() -> None:
    world = generate_identity_world(400, seed=3)
    g = InMemoryIdentityGraph(IdentityConfig(merge_threshold=0.8))  # the world's matcher scores are calibrated for it
    await g.add_links(world.links)
    score = evaluate_identity(await g.assignments(), world.truth)
    assert score.precision > 0.6 and score.recall > 0.4
    again = generate_identity_world(400, seed=3)
    assert again.links == world.links and again.truth == world.truth


async def test_large_components_merge_and_split(make_graph) -> None:
    g = await make_graph(max_component_nodes=5000)
    links = [login(f"a{i}", f"a{i}", "ua") for i in range(1200)] + [login(f"b{i}", f"b{i}", "ub") for i in range(1300)]
    await g.add_links(links)
    assert await g.add_links([match("bridge", "a0", "b0", 0.9)]) == [LinkStatus.MERGED]
    res = await g.resolve_many(["a5", "b5"])
    assert res["a5"].person_id == res["b5"].person_id == "u:ub" and res["a5"].device_count == 2500
    assert res["a5"].confidence == pytest.approx(0.9)
    await g.revoke("bridge")
    res = await g.resolve_many(["a5", "b5"])
    assert res["a5"] == Resolution("u:ua", 1.0, 1200) and res["b5"] == Resolution("u:ub", 1.0, 1300)
