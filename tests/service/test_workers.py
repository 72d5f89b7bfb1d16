"""`gaelp serve --workers 2`: two bidder processes on one port and one small budget."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.serve_kit import serve_toml, start_serve

pytestmark = [pytest.mark.services, pytest.mark.slow]

BUDGET_USD = 0.05


async def _healthy(session: aiohttp.ClientSession, port: int) -> None:
    for _ in range(600):
        try:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"worker metrics port {port} never answered")


async def _requests_served(session: aiohttp.ClientSession, port: int) -> float:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith("gaelp_bidder_requests_total "))


async def test_two_bidder_processes_never_spend_past_one_budget(tansu, service_redis_url, tmp_path: Path) -> None:
    prefix = f"wk{uuid.uuid4().hex[:6]}"
    config = tmp_path / "gaelp.toml"
    # the pacing rail off: the hard cap is what must hold under concurrency
    config.write_text(serve_toml(prefix, tmp_path, budget_usd=BUDGET_USD, campaign=prefix).replace(
        "[budget]\n", "[budget]\npacing_slack = 1.0\n"))
    proc, port = await start_serve(config, tansu.bootstrap, service_redis_url, "--roles", "bidder", "--workers", "2")
    bids: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            for k in range(2):
                await _healthy(session, port + 1 + k)

            async def one(i: int) -> None:
                body = {"id": f"{prefix}-{i}", "at": 2, "imp": [{"id": "1", "bidfloor": 0.5, "banner": {"w": 300}}],
                        "site": {"id": f"s{i % 7}", "cat": [f"IAB{i % 5 + 1}"]},
                        "device": {"ifa": f"dev-{i}", "devicetype": 4, "ip": f"192.0.2.{i % 250}"}}
                # a fresh connection per request: the kernel spreads connections over the workers
                async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{port}/openrtb2/bid",
                                                                  json=body) as r:
                    assert r.status in (200, 204), await r.text()
                    if r.status == 200:
                        bids.append(json.loads(await r.read())["seatbid"][0]["bid"][0]["price"])

            for start in range(0, 600, 40):  # hammered: 40 requests in flight at a time
                await asyncio.gather(*(one(i) for i in range(start, start + 40)))
            served = [await _requests_served(session, port + 1 + k) for k in range(2)]
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert all(s > 0 for s in served), served  # both processes bid
    r = aioredis.from_url(service_redis_url)
    [ledger_key] = [k async for k in r.scan_iter(f"*budget:{prefix}:*")]
    ledger = {"spent": 0, "reserved": 0} | {k.decode(): int(v) for k, v in (await r.hgetall(ledger_key)).items()}
    resv = [int(v) for v in (await r.hgetall(ledger_key.replace(b"budget:", b"resv:"))).values()]
    await r.aclose()
    budget = round(BUDGET_USD * 1e6)
    assert ledger["budget"] == budget
    assert ledger["spent"] + ledger["reserved"] <= budget  # never past the budget
    assert sum(resv) == ledger["reserved"]  # the ledger matches its reservations
    assert ledger["reserved"] == sum(round(p * 1e6) // 1000 for p in bids)  # each bid reserved its worst case
    assert len(bids) > 0 and ledger["reserved"] > budget * 0.5  # the budget ran short, and was used


def test_a_learner_process_without_a_bid_path_yields_the_cpu(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`[learner] nice` and SCHED_IDLE are taken by a process that runs the learner but no bidder (before Ray starts,
    so Ray's processes inherit it); a process with a bid path, or nice = 0, keeps its priority."""
    import os

    from agent_service.config import GaelpConfig
    from agent_service.runtime.serve import yield_cpu

    calls: list[int] = []
    idle: list[int] = []
    monkeypatch.setattr(os, "nice", lambda n: calls.append(n) or n)
    monkeypatch.setattr(os, "sched_setscheduler", lambda tid, policy, _: idle.append(policy))
    cfg = GaelpConfig()
    assert yield_cpu(cfg, {"learner"}) == 10 and calls == [10]
    assert idle and set(idle) == {os.SCHED_IDLE}  # every thread of the process
    assert yield_cpu(cfg, {"bidder", "learner"}) == 0 and yield_cpu(cfg, {"stream"}) == 0
    assert yield_cpu(cfg, {"candidate"}) == 10 and calls == [10, 10]  # the shadow candidate: background too
    assert yield_cpu(cfg, {"bidder", "candidate"}) == 0
    n = len(idle)
    assert yield_cpu(cfg.replace("learner", nice=0, sched_idle=False), {"learner"}) == 0
    assert calls == [10, 10] and len(idle) == n
