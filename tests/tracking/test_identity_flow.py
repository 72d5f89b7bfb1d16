"""Identity through the whole flow (both adapter pairs): raw ids in, pseudonyms in the graph and
the store, cross-device joins after a merge, and after a revocation new conversions see only
the journey of the person the device now belongs to. Plus the store's identity methods."""

from __future__ import annotations

import pytest

from agent_service.contracts.codec import decode
from agent_service.contracts.events import (
    AuctionResult,
    Conversion,
    Decision,
    Experience,
    IdentityLink,
    Touch,
)
from agent_service.ports.store import IdentityAssignment
from tests.flowkit import DAY, T0, FlowKit, bid_request
from tests.store_probe import read_credits, read_identity, read_journey, seed_touch
from tests.tracking.conftest import Backend

pytestmark = pytest.mark.services


async def _won(kit: FlowKit, rid: str, device: str, t: int) -> Decision:
    outs = await kit.handle(kit.topics.bid_requests, bid_request(rid, device, t))
    [dec] = [decode(o.value, Decision) for o in outs if o.topic == kit.topics.decisions]
    assert dec.bid, dec.no_bid_reason
    await kit.handle(kit.topics.auction_results, AuctionResult(
        id=f"res-{rid}", event_time=t + 50, decision_id=dec.id, won=True, price_paid_micros=1_000))
    return dec


def _credited(outputs: list) -> list[str]:
    return [e.decision_id for e in (decode(o.value, Experience) for o in outputs
                                    if o.topic == "gaelp.experience") if e.kind == "credit"]


async def test_cross_device_join_then_revocation(backend: Backend) -> None:
    kit = FlowKit(backend.store)
    kit.flow.outcomes.identity.graph = backend.make_graph(kit.cfg)  # type: ignore[operator]
    ids = kit.flow.decider.ids
    phone = await _won(kit, "r1", "phone-raw", T0 + 1_000)
    links = [IdentityLink(id="l1", event_time=T0 + 2_000, device_id="phone-raw", person_id="alice-raw"),
             IdentityLink(id="m1", event_time=T0 + 3_000, device_id="laptop-raw", other_device_id="phone-raw",
                          kind="probabilistic", score=0.96, ip="203.0.113.9")]
    await kit.handle(kit.topics.identity_links, *links, links[0])
    laptop = await read_identity(backend.store, ids("laptop-raw"))
    assert (laptop.person_id, round(laptop.confidence, 6), laptop.device_count) == (ids("alice-raw"), 0.96, 2)
    await kit.ticks(T0 + 4 * DAY)
    out = await kit.handle(kit.topics.conversions, Conversion(
        id="c1", event_time=T0 + 3 * DAY, value_micros=5_000_000, device_id="laptop-raw"))
    assert _credited(out) == [phone.id]

    revoke = IdentityLink(id="m1", event_time=T0 + 4 * DAY, device_id="laptop-raw", other_device_id="phone-raw",
                          kind="probabilistic", score=0.96, revoked=True)
    await kit.handle(kit.topics.identity_links, revoke, revoke)
    assert (await read_identity(backend.store, ids("laptop-raw"))).person_id == "d:" + ids("laptop-raw")
    assert (await read_identity(backend.store, ids("phone-raw"))).device_count == 1
    await kit.ticks(T0 + 6 * DAY)
    out = await kit.handle(kit.topics.conversions, Conversion(
        id="c2", event_time=T0 + 5 * DAY, value_micros=5_000_000, device_id="laptop-raw"))
    assert _credited(out) == []  # the laptop is nobody's second device any more
    out = await kit.handle(kit.topics.conversions, Conversion(
        id="c3", event_time=T0 + 5 * DAY, value_micros=5_000_000, user_id="alice-raw"))
    assert _credited(out) == [phone.id]  # alice's own journey is intact
    assert await read_credits(backend.store, phone.id) == {"c1": 5_000_000, "c3": 5_000_000}  # c1 kept


def _touch(decision: str, device: str) -> Touch:
    return Touch(decision_id=decision, event_time=10, channel="social", creative=0, segment=0, device_id=device)


async def test_store_assignments_are_idempotent_and_unlink(backend: Backend) -> None:
    s = backend.store
    await seed_touch(s, "a", _touch("ta", "a"), 3600)
    await seed_touch(s, "b", _touch("tb", "b"), 3600)
    assign = [IdentityAssignment("a", "p", 1.0), IdentityAssignment("b", "p", 0.9)]
    assert await s.assign_identities(assign, 3600) == 2
    assert await s.assign_identities(assign, 3600) == 0  # again: nothing changes
    assert await s.identity_peers(["a", "zz"]) == [("p", ["a", "b"]), ("d:zz", ["zz"])]
    assert await s.person_devices(["p", "nobody"]) == [["a", "b"], []]
    assert [t.decision_id for t in await read_journey(s, "p")] == ["ta", "tb"]
    assert await s.assign_identities([IdentityAssignment("b", None, 1.0)], 3600) == 1
    assert (await read_identity(s, "b")) == ("d:b", 1.0, 1) and (await read_identity(s, "a")).device_count == 1
    assert [t.decision_id for t in await read_journey(s, "d:b")] == ["tb"]
    assert [t.decision_id for t in await read_journey(s, "p")] == ["ta"]


async def test_ip_devices_are_capped(backend: Backend) -> None:
    got = await backend.store.ip_devices([("ip1", ["a", "b"]), ("ip2", ["c"]), ("ip1", ["b", "c", "d"])], cap=3)
    assert [sorted(x) for x in got] == [["a", "b"], ["c"], ["a", "b", "c"]]
