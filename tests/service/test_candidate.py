"""A candidate policy beside the live one: shadow-logged on the live requests, live for the canary share."""

from __future__ import annotations

from agent_service.adapters.memory_store import MemoryStore
from agent_service.config import GaelpConfig
from agent_service.contracts.codec import decode
from agent_service.contracts.events import Decision
from agent_service.experiments.assignment import bucket
from tests.flowkit import T0, FlowKit, bid_request


async def _decide(share: float, sample: float = 1.0) -> tuple[list[Decision], list[Decision]]:
    cfg = GaelpConfig().replace("budget", daily_usd=1000.0).replace("serve", candidate_version=1, canary_share=share,
                                                                     candidate_sample=sample)
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


async def test_the_candidate_shadows_a_hashed_sample_of_the_live_requests() -> None:
    """`[serve] candidate_sample`: a share of the requests, chosen by hashing request and imp ids
    (independent of outcomes), is decided a second time; the rest only live."""
    live, shadow = await _decide(0.0, sample=0.25)
    assert len(live) == 60 and 0 < len(shadow) < 30
    picked = {d.id for d in live if bucket(f"{d.request_id}\x00{d.imp_id}", "shadow") < 0.25}
    assert {d.id for d in shadow} == picked
    assert (await _decide(0.0, sample=0.25))[1] == shadow  # the same requests every time


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

    cfg = GaelpConfig().replace("budget", daily_usd=1000.0).replace("serve", candidate_version=1, candidate_sample=1.0)
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
    assert kit.metrics.candidate_decisions._value.get() == 5  # gaelp_candidate_decisions_total


async def test_shadow_candidate_through_the_warehouse_into_ope(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """gaelp simulate with a candidate → the warehouse holds its shadow rows beside the live ones →
    `gaelp ope` pairs every live decision with the candidate's and uses them (slot propensities
    read at the state layout's own column)."""
    import json as _json

    import duckdb

    from agent_service.cli import main
    from agent_service.runtime.simulate import run_simulation

    cfg = GaelpConfig().replace("serve", candidate_version=1, candidate_sample=1.0).replace(
        "simulation", days=0.2, opportunities_per_day=3_000, users=500, drain_days=15)
    await run_simulation(cfg, tmp_path, progress=False)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    rows = dict(con.execute("SELECT shadow, count(*) FROM decisions GROUP BY 1").fetchall())
    con.close()
    assert rows[True] == rows[False] > 0
    capsys.readouterr()
    assert main(["ope", "--log", str(tmp_path / "warehouse.duckdb"), "--candidate", "1", "--known-versions",
                 ",".join(str(v) for v in range(1, 60)), "--json"]) == 0
    report = _json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    v = report["validation"]
    assert v["n_used"] > 0 and not v["refused"].get("propensity_out_of_range")
