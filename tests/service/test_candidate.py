"""A candidate policy beside the live one: shadow-logged on the live requests, live for the canary share."""

from __future__ import annotations

from agent_service.adapters.memory_store import MemoryStore
from agent_service.config import GaelpConfig
from agent_service.contracts.codec import decode
from agent_service.contracts.events import Decision
from agent_service.experiments.assignment import bucket
from tests.flowkit import T0, FlowKit, bid_request


async def _decide(share: float) -> tuple[list[Decision], list[Decision]]:
    cfg = GaelpConfig().replace("budget", daily_usd=1000.0).replace("serve", candidate_version=1, canary_share=share)
    kit = FlowKit(MemoryStore(), cfg)
    assert kit.registry.publish(kit.registry.load(1)) == 2  # live serves the newest version, 2
    reqs = [bid_request(f"r{i}", f"dev{i}", T0 + 9 * 3_600_000 + 1_000 * i) for i in range(60)]
    out = await kit.handle(cfg.topics.bid_requests, *reqs)
    live = [decode(o.value, Decision) for o in out if o.topic == cfg.topics.decisions]
    shadow = [decode(o.value, Decision) for o in out if o.topic == cfg.topics.candidate_decisions]
    return live, shadow


async def test_the_candidate_decides_every_live_request_beside_it_and_never_bids() -> None:
    live, shadow = await _decide(0.0)
    assert len(live) == 60 and {d.model_version for d in live} == {2} and not any(d.shadow for d in live)
    assert [d.id for d in shadow] == [d.id for d in live]  # the same requests, joinable by decision id
    assert {d.model_version for d in shadow} == {1}
    assert all(d.shadow and not d.bid and d.action.bid_cpm_micros == 0 and 0 < d.propensity <= 1 for d in shadow)
    assert any(d.bid for d in live)


async def test_the_canary_share_of_persons_is_served_live_by_the_candidate() -> None:
    live, shadow = await _decide(0.5)
    canary = {d.id for d in live if d.model_version == 1}
    assert 0 < len(canary) < 60 and not any(d.shadow for d in live)  # the canary's decisions are live
    for d in live:  # assignment by the person's hashed bucket: stable, one arm per person
        assert (d.model_version == 1) == (bucket(d.person_id, "canary") < 0.5)
    assert {d.id for d in shadow} == {d.id for d in live} - canary  # the rest are shadowed by the candidate
    assert any(d.bid for d in live if d.id in canary)


async def test_the_bid_endpoint_logs_the_candidates_decisions_after_answering() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from agent_service.adapters.memory_bus import MemoryBus
    from agent_service.http.app import build_http_app

    cfg = GaelpConfig().replace("budget", daily_usd=1000.0).replace("serve", candidate_version=1)
    kit = FlowKit(MemoryStore(), cfg)
    bus = MemoryBus()
    app = build_http_app(kit.flow.decider, bus, cfg.topics.decisions, kit.metrics, clock=lambda: T0 + 9 * 3_600_000,
                         admin_token=None, candidate_topic=cfg.topics.candidate_decisions)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        for i in range(5):
            body = {"id": f"h{i}", "imp": [{"id": "1", "bidfloor": 0.5}], "tmax": 10_000,
                    "device": {"ifa": f"hd{i}", "devicetype": 4}, "site": {"cat": ["IAB1"]}}
            assert (await client.post("/openrtb2/bid", json=body)).status in (200, 204)
    finally:
        await client.close()  # drains the logs
    logged = [decode(r.value, Decision) for part in bus._topic(cfg.topics.decisions) for r in part]
    shadow = [decode(r.value, Decision) for part in bus._topic(cfg.topics.candidate_decisions) for r in part]
    assert sorted(d.id for d in shadow) == sorted(d.id for d in logged) and len(shadow) == 5
    assert all(d.shadow and not d.bid and d.model_version == 1 for d in shadow)
