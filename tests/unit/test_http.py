"""The OpenRTB bid endpoint and admin actions, served by aiohttp over the embedded adapters."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent_service.adapters.memory_bus import MemoryBus
from agent_service.adapters.memory_store import MemoryStore
from agent_service.adapters.registry import MemoryRegistry
from agent_service.config import GaelpConfig
from agent_service.contracts.codec import decode
from agent_service.contracts.openrtb import BidResponse
from agent_service.http.admin import parse_budget_change
from agent_service.http.app import build_http_app
from agent_service.metrics import Metrics
from agent_service.runtime.assembly import build_learner, build_service
from tests.flowkit import T0


async def _client(daily_usd: float = 50.0, token: str | None = "s3cret") -> tuple[TestClient, MemoryBus]:
    cfg = GaelpConfig().replace("budget", daily_usd=daily_usd)
    store, bus, registry, metrics = MemoryStore(), MemoryBus(), MemoryRegistry(), Metrics()
    build_learner(cfg, registry, creatives=4, seed=0)
    svc = build_service(cfg, store, registry, metrics, {}, clock=lambda: T0 + 12 * 3_600_000, campaign="c",
                        creatives=4, seed=0)

    async def budget(body: dict[str, object]) -> dict[str, object]:
        return parse_budget_change(body, current_period=20_000)._asdict()

    app = build_http_app(svc.decider, bus, cfg.topics.decisions, metrics, clock=lambda: T0 + 12 * 3_600_000,
                         admin_token=token, admin_actions={"budget": budget})
    client = TestClient(TestServer(app))
    await client.start_server()
    return client, bus


@pytest.mark.parametrize("name", ["mobile-app.json", "simple-banner.json"])
async def test_spec_examples_get_valid_bids(shared_dir: Path, name: str) -> None:
    client, bus = await _client()
    try:
        body = (shared_dir / "reference/openrtb/bid-requests" / name).read_bytes()
        resp = await client.post("/openrtb2/bid", data=body)
        assert resp.status == 200 and resp.headers["x-openrtb-version"] == "2.6"
        br = decode(await resp.read(), BidResponse)
        req = json.loads(body)
        assert br.id == req["id"]
        [bid] = br.seatbid[0].bid
        assert bid.impid == req["imp"][0]["id"] and bid.price >= req["imp"][0]["bidfloor"]
        assert 0.5 <= bid.price <= 10.0
        # the decision log is published by its own task after the answer: wait for it, then exactly one
        deadline = asyncio.get_running_loop().time() + 10.0
        while bus.lag("any", GaelpConfig().topics.decisions) == 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        assert bus.lag("any", GaelpConfig().topics.decisions) == 1  # the decision was logged, once
    finally:
        await client.close()


async def test_invalid_requests_get_400_naming_the_field() -> None:
    client, _ = await _client()
    try:
        cases = {b"{": "$", b'{"id": 3, "imp": [{"id": "1"}]}': "$.id", b'{"id": "a"}': "$.imp",
                 b'{"id": "a", "imp": [{"id": "1", "bidfloor": -2}]}': "$.imp[0].bidfloor",
                 b'{"id": "a", "imp": [{"id": "1"}], "tmax": 0}': "$.tmax"}
        for body, field in cases.items():
            resp = await client.post("/openrtb2/bid", data=body)
            assert resp.status == 400, body
            assert (await resp.json())["field"] == field
    finally:
        await client.close()


async def test_unknown_fields_tolerated_and_no_budget_is_204() -> None:
    client, _ = await _client(daily_usd=0.000001)
    try:
        body = {"id": "r", "imp": [{"id": "1", "bidfloor": 0.5, "ext": {"x": [1, {"y": None}]}, "newthing": 1}],
                "device": {"ifa": "d", "weird": {"a": 1}}, "regs": {"gdpr": 1}, "source": {"tid": "t"}}
        resp = await client.post("/openrtb2/bid", json=body)
        assert resp.status == 204
    finally:
        await client.close()


async def test_floor_above_max_bid_and_foreign_currency_are_no_bids() -> None:
    client, _ = await _client()
    try:
        for imp, cur in (({"id": "1", "bidfloor": 50.0}, None), ({"id": "1", "bidfloorcur": "EUR"}, None),
                         ({"id": "1"}, ["EUR"])):
            body = {"id": "r", "imp": [imp]} | ({"cur": cur} if cur else {})
            assert (await client.post("/openrtb2/bid", json=body)).status == 204
    finally:
        await client.close()


async def test_admin_needs_the_token() -> None:
    client, _ = await _client()
    try:
        assert (await client.post("/admin/budget", json={"daily_usd": 1})).status == 401
        bad = await client.post("/admin/budget", json={}, headers={"Authorization": "Bearer nope"})
        assert bad.status == 401
        ok = await client.post("/admin/budget", json={"daily_usd": 1}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status == 200
        assert (await client.post("/admin/nothing", headers={"Authorization": "Bearer s3cret"})).status == 404
    finally:
        await client.close()
    client, _ = await _client(token=None)
    try:
        assert (await client.post("/admin/budget", json={"daily_usd": 1})).status == 403
    finally:
        await client.close()


async def test_metrics_are_prometheus_text_with_gaelp_names() -> None:
    client, _ = await _client()
    try:
        await client.post("/openrtb2/bid", json={"id": "m", "imp": [{"id": "1"}]})
        text = await (await client.get("/metrics")).text()
        assert "gaelp_bidder_requests_total 1.0" in text
        names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
        assert names and all(n.startswith("gaelp_") for n in names)
    finally:
        await client.close()


@pytest.mark.parametrize(("raw", "field"), [
    ('{"daily_usd": NaN}', "daily_usd"), ('{"daily_usd": Infinity}', "daily_usd"),
    ('{"daily_usd": -Infinity}', "daily_usd"), ('{"daily_usd": -5}', "daily_usd"),
    ('{"daily_usd": 1e300}', "daily_usd"), ('{"daily_usd": "10"}', "daily_usd"), ('{"daily_usd": true}', "daily_usd"),
    ('{}', "daily_usd"), ('{"daily_usd": 5, "period": 1.5}', "period"), ('{"daily_usd": 5, "period": -1}', "period"),
    ('{"daily_usd": 5, "period": NaN}', "period"), ('[1]', "$"), ('{"daily_usd": ', "$"),
])
async def test_every_bad_admin_budget_is_a_400_naming_the_field(raw: str, field: str) -> None:
    client, _ = await _client()
    try:
        resp = await client.post("/admin/budget", data=raw, headers={"Authorization": "Bearer s3cret",
                                                                      "Content-Type": "application/json"})
        assert resp.status == 400
        assert (await resp.json())["field"] == field
    finally:
        await client.close()


async def test_a_valid_admin_budget_is_exact_in_micros() -> None:
    client, _ = await _client()
    try:
        resp = await client.post("/admin/budget", json={"daily_usd": 12.345678, "period": 20_001},
                                 headers={"Authorization": "Bearer s3cret"})
        assert resp.status == 200
        assert await resp.json() == {"budget_micros": 12_345_678, "period": 20_001}
    finally:
        await client.close()
