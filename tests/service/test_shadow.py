"""A shadow instance (`gaelp serve --shadow`): it never bids — under load, across a hot-swap —
and disturbs nothing live: its own Redis keys, consumer group and output topics, no budget
reserved, no weights published."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from agent_service.adapters.kafka_bus import KafkaBus
from agent_service.adapters.registry import FileRegistry
from agent_service.agent.learning.learner import HybridLearner
from agent_service.agent.serving.hybrid import spec_of
from agent_service.config import GaelpConfig, RewardConfig
from agent_service.contracts.codec import decode
from agent_service.contracts.events import Decision
from agent_service.errors import ConfigError
from agent_service.runtime.serve import ServeRuntime
from agent_service.runtime.shadow import shadow_config, shadow_roles
from tests.serve_kit import serve_toml, start_serve


def test_a_shadow_gets_its_own_keys_group_and_output_topics() -> None:
    live = GaelpConfig()
    sh = shadow_config(live.replace("serve", shadow=True))
    assert sh.serve.key_prefix == "gaelp:shadow:" and sh.identity.key_prefix.endswith("shadow:")
    assert sh.serve.group_id == "gaelp-shadow"
    assert (sh.topics.decisions, sh.topics.experience, sh.topics.dead_letters) == (
        "gaelp.decisions.shadow", "gaelp.experience.shadow", "gaelp.dead-letters.shadow")
    assert sh.topics.bid_requests == live.topics.bid_requests  # it reads the live traffic
    assert sh.serve.registry_prefix == live.serve.registry_prefix  # and serves the live versions
    assert shadow_config(live) == live


def test_a_shadow_runs_no_learner_and_no_sink_unless_told() -> None:
    sh = GaelpConfig().replace("serve", shadow=True)
    assert shadow_roles(sh, {"bidder", "stream", "learner", "sink"}) == {"bidder", "stream"}
    learn = sh.replace("serve", shadow_learn=True)
    assert shadow_roles(learn, {"bidder", "learner", "sink"}) == {"bidder", "learner"}
    own = shadow_config(learn)
    assert own.serve.registry_prefix != sh.serve.registry_prefix and own.serve.model_dir.endswith("shadow")
    with pytest.raises(ConfigError, match="nothing left"):
        ServeRuntime(sh, roles={"learner"})


async def _version(session: aiohttp.ClientSession, port: int) -> int:
    async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
        return int((await r.json())["model_version"])


@pytest.mark.services
@pytest.mark.slow
async def test_a_shadow_never_bids_under_load_across_a_hot_swap_and_touches_nothing_live(
        tansu, service_redis_url, tmp_path: Path) -> None:
    prefix = f"sh{uuid.uuid4().hex[:6]}"
    config = tmp_path / "gaelp.toml"
    config.write_text(serve_toml(prefix, tmp_path, budget_usd=1000.0, campaign=prefix))
    cfg = GaelpConfig()
    spec_learner = HybridLearner(spec_of(cfg.hybrid, 12), cfg.hybrid, RewardConfig())
    registry = FileRegistry(tmp_path / "models")
    registry.publish(spec_learner.state())  # the live model, v1
    r = aioredis.from_url(service_redis_url)
    live_keys = {b"gaelp:live-canary"}
    await r.set(b"gaelp:live-canary", b"1")
    proc, port = await start_serve(config, tansu.bootstrap, service_redis_url, "--shadow", "--creatives", "12")
    statuses: list[int] = []
    try:
        async with aiohttp.ClientSession() as session:
            assert await _version(session, port) == 1

            async def one(i: int) -> None:
                body = {"id": f"{prefix}-{i}", "at": 2, "imp": [{"id": "1", "bidfloor": 0.5, "banner": {"w": 300}}],
                        "site": {"id": f"s{i % 7}", "cat": [f"IAB{i % 5 + 1}"]},
                        "device": {"ifa": f"dev-{i % 90}", "devicetype": 4, "ip": f"192.0.2.{i % 250}"}}
                async with session.post(f"http://127.0.0.1:{port}/openrtb2/bid", json=body) as resp:
                    statuses.append(resp.status)

            for start in range(0, 400, 40):  # 40 in flight at a time
                await asyncio.gather(*(one(i) for i in range(start, start + 40)))
                if start == 160:  # a new live version mid-run: the shadow swaps to it and still never bids
                    registry.publish(spec_learner.state())
                    for _ in range(100):
                        if await _version(session, port) == 2:
                            break
                        await asyncio.sleep(0.05)
            assert await _version(session, port) == 2
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert statuses and set(statuses) == {204}, (set(statuses), out[-2000:])
    assert registry.latest_version() == 2  # it published nothing
    keys = {k async for k in r.scan_iter("*")}
    written = keys - live_keys
    assert written and all(k.startswith(b"gaelp:shadow:") or b"shadow:" in k for k in written), sorted(written)[:10]
    ledgers = [k for k in written if b"budget:" in k]
    for key in ledgers:
        ledger = {k.decode(): int(v) for k, v in (await r.hgetall(key)).items()}
        assert ledger.get("spent", 0) == 0 and ledger.get("reserved", 0) == 0, ledger
    await r.aclose()
    # its decisions are logged on its own topic, as shadow no-bids; the live decision log is empty
    bus = KafkaBus(tansu.bootstrap)
    await bus.start()
    try:
        logged: dict[str, list[Decision]] = {}
        for topic in (f"{prefix}.decisions.shadow", f"{prefix}.decisions"):
            reader = bus.consumer([topic], f"check-{uuid.uuid4().hex[:6]}")
            await reader.start()
            logged[topic] = []
            for _ in range(20):
                logged[topic] += [decode(rec.value, Decision) for rec in await reader.getmany(timeout_ms=300)]
            await reader.stop()
    finally:
        await bus.stop()
    shadow, live = logged[f"{prefix}.decisions.shadow"], logged[f"{prefix}.decisions"]
    assert live == []
    assert len({d.id for d in shadow}) == 400 and all(d.shadow and not d.bid for d in shadow)
    assert {d.no_bid_reason for d in shadow} <= {"shadow", "floor", "organic"}
