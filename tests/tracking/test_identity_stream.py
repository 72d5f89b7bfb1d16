"""The identity-links handler on both adapter pairs (in-process store + graph, Redis store +
Redis graph): merges, threshold, confidence, device counts, caps, shared IPs, revocation, and
journeys that follow every change — with nothing changed by a redelivery."""

from __future__ import annotations

from typing import Any

import pytest

from agent_service.config import GaelpConfig
from agent_service.contracts.events import IdentityLink, Touch
from agent_service.pipeline.identity_links import IdentityLinks
from tests.store_probe import read_identity, read_journey, seed_click, seed_touch
from tests.tracking.conftest import Backend

pytestmark = pytest.mark.services

TTL = 16 * 86_400


def login(i: str, device: str, person: str, revoked: bool = False) -> IdentityLink:
    return IdentityLink(id=i, event_time=1, device_id=device, person_id=person, revoked=revoked)


def match(i: str, device: str, score: float, person: str = "", other: str | None = None, ip: str | None = None,
          revoked: bool = False) -> IdentityLink:
    return IdentityLink(id=i, event_time=1, device_id=device, person_id=person, other_device_id=other,
                        kind="probabilistic", score=score, ip=ip, revoked=revoked)


def touch(decision: str, device: str, t: int) -> Touch:
    return Touch(decision_id=decision, event_time=t, channel="social", creative=1, segment=0, device_id=device)


def handler(b: Backend, cfg: GaelpConfig | None = None) -> IdentityLinks:
    cfg = cfg or GaelpConfig()
    return IdentityLinks(cfg, b.store, b.make_graph(cfg))  # type: ignore[operator]


async def who(b: Backend, device: str) -> tuple[str, float, int]:
    ident = await read_identity(b.store, device)
    return ident.person_id, round(ident.confidence, 6), ident.device_count


async def journey(b: Backend, person: str) -> list[tuple[str, bool]]:
    return [(t.decision_id, t.clicked) for t in await read_journey(b.store, person)]


async def test_logins_merge_probabilistic_links_only_above_the_threshold(backend: Backend) -> None:
    h = handler(backend)
    await h.handle([login("l1", "phone", "alice"), match("p1", "laptop", 0.95, person="alice"),
                    match("p2", "tablet", 0.85, person="alice")])
    assert await who(backend, "phone") == ("alice", 1.0, 2)
    assert await who(backend, "laptop") == ("alice", 0.95, 2)  # the match's score is the confidence
    assert await who(backend, "tablet") == ("d:tablet", 1.0, 1)  # 0.85 < join.identity_min_score 0.9
    assert h.statuses == {"merged": 2, "below_threshold": 1}
    assert await backend.store.identity_peers(["laptop", "tablet"]) == [("alice", ["laptop", "phone"]),
                                                                        ("d:tablet", ["tablet"])]


async def test_journeys_follow_merge_and_split_with_their_clicks(backend: Backend) -> None:
    h, s = handler(backend), backend.store
    await seed_touch(s, "phone", touch("t1", "phone", 100), TTL)
    await seed_touch(s, "laptop", touch("t2", "laptop", 200), TTL)
    await seed_click(s, "laptop", "t2", TTL)
    await h.handle([login("l1", "phone", "alice"), login("l2", "laptop", "alice")])
    assert await journey(backend, "alice") == [("t1", False), ("t2", True)]
    assert await journey(backend, "d:phone") == await journey(backend, "d:laptop") == []

    await h.handle([login("l2", "laptop", "alice", revoked=True)])  # the laptop logs out for good
    assert await who(backend, "laptop") == ("d:laptop", 1.0, 1)  # no stale link left
    assert await who(backend, "phone") == ("alice", 1.0, 1)
    assert await journey(backend, "alice") == [("t1", False)]  # the laptop took its own touch back
    assert await journey(backend, "d:laptop") == [("t2", True)]
    await seed_touch(s, "laptop", touch("t3", "laptop", 300), TTL)  # new touches go to the right person
    assert [t for t, _ in await journey(backend, "d:laptop")] == ["t2", "t3"]
    assert await journey(backend, "alice") == [("t1", False)]


async def test_device_matches_form_a_person_that_a_login_then_names(backend: Backend) -> None:
    h, s = handler(backend), backend.store
    await seed_touch(s, "tv", touch("t1", "tv", 100), TTL)
    await h.handle([match("m1", "tv", 0.95, other="tablet", ip="ip-home")])
    # No user key: the person is named by its smallest device (the graph's root).
    assert await who(backend, "tv") == ("d:tablet", 0.95, 2)
    assert await who(backend, "tablet") == ("d:tablet", 1.0, 2)
    assert await journey(backend, "d:tablet") == [("t1", False)] and await journey(backend, "d:tv") == []
    await h.handle([login("l1", "tablet", "bob")])
    assert await who(backend, "tv") == ("bob", 0.95, 2)
    assert await who(backend, "tablet") == ("bob", 1.0, 2)
    assert await journey(backend, "bob") == [("t1", False)]
    assert await journey(backend, "d:tablet") == []


async def test_component_cap_refuses_the_merge(backend: Backend) -> None:
    cfg = GaelpConfig().replace("identity", max_component_nodes=4)  # u, its anchor and 2 devices
    h = handler(backend, cfg)
    await h.handle([login("a", "d1", "u"), login("b", "d2", "u"), login("c", "d3", "u")])
    assert h.statuses == {"merged": 2, "capped": 1}
    assert await who(backend, "d3") == ("d:d3", 1.0, 1)
    assert (await who(backend, "d1"))[2] == 2


async def test_a_shared_ip_undoes_its_matches_and_moves_the_devices_out(backend: Backend) -> None:
    cfg = GaelpConfig().replace("identity", max_ip_devices=3)
    h, s = handler(backend, cfg), backend.store
    await h.handle([login("l1", "d1", "carol"), match("m1", "d2", 0.97, other="d1", ip="nat")])
    await seed_touch(s, "d2", touch("t2", "d2", 100), TTL)
    assert await who(backend, "d2") == ("carol", 0.97, 2)
    assert await journey(backend, "carol") == [("t2", False)]
    await h.handle([match("m2", "d3", 0.99, other="d4", ip="nat")])  # a 4th device behind the IP
    assert await who(backend, "d2") == ("d:d2", 1.0, 1)  # its match through the shared IP is undone
    assert await who(backend, "d1") == ("carol", 1.0, 1)
    assert await who(backend, "d3") == ("d:d3", 1.0, 1) and await who(backend, "d4") == ("d:d4", 1.0, 1)
    assert await journey(backend, "d:d2") == [("t2", False)] and await journey(backend, "carol") == []
    assert h.statuses["ip_fanout"] == 1


async def test_redelivery_and_early_revocation_change_nothing(backend: Backend) -> None:
    h, s = handler(backend), backend.store
    for i, dev in enumerate(("p", "q", "r", "x")):
        await seed_touch(s, dev, touch(f"t{i}", dev, 100 + i), TTL)
    batch = [match("gone", "x", 0.99, person="dana", revoked=True),  # revoked before it arrives
             login("l1", "p", "dana"), match("m1", "q", 0.93, person="dana"), match("m2", "r", 0.96, other="q"),
             match("gone", "x", 0.99, person="dana")]

    async def snapshot() -> list[Any]:
        persons = [await who(backend, d) for d in ("p", "q", "r", "x")]
        return [persons, [await journey(backend, p) for p in ("dana", "d:p", "d:q", "d:r", "d:x")]]

    await h.handle(batch)
    first, moved = await snapshot(), h.reassigned
    assert first[0] == [("dana", 1.0, 3), ("dana", 0.93, 3), ("dana", 0.8928, 3), ("d:x", 1.0, 1)]
    assert [t for t, _ in first[1][0]] == ["t0", "t1", "t2"] and first[1][4] == [("t3", False)]
    await h.handle(batch)
    await h.handle(batch[1:3])
    assert await snapshot() == first and h.reassigned == moved
