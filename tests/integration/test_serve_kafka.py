"""End to end on real protocols: the simulator's events through a tansu Kafka broker into
``gaelp serve`` (a separate process) with a real Redis.

Checks the issue's promise: every conversion the simulator emitted inside the window that can
be joined deterministically (same device, or logged in on both) is joined exactly once, none
twice, and no day's spend exceeds its budget.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agent_service.adapters.kafka_bus import KafkaBus
from agent_service.adapters.redis_store import RedisStore
from agent_service.config import SimulationConfig, TopicsConfig
from agent_service.pipeline.decide import DAY_MS, period_of
from agent_service.runtime.driver import SimDriver
from agent_service.runtime.feed import feed
from simulators.basic import BasicWorld, BasicWorldParams
from tests.serve_kit import ROOT, await_join_records, read_experience, serve_toml, start_serve
from tests.store_probe import read_credits

pytestmark = [pytest.mark.services, pytest.mark.slow]

def _config(tmp: Path, prefix: str, extra: str = "") -> Path:
    path = tmp / "gaelp.toml"
    path.write_text(serve_toml(prefix, tmp, budget_usd=4.0, campaign="it", extra=extra))
    return path


@pytest.mark.parametrize("runtime", ["faust", "batch"])
async def test_simulated_stream_through_kafka_into_serve(tansu, service_redis_url, tmp_path: Path, runtime: str) -> None:
    prefix = f"it{uuid.uuid4().hex[:6]}"
    config = _config(tmp_path, prefix, extra=f'stream_runtime = "{runtime}"\n')
    proc, _port = await start_serve(config, tansu.bootstrap, service_redis_url)
    topics = TopicsConfig(**{k: f"{prefix}.{k.replace('_', '-')}" for k in (
        "bid_requests", "decisions", "auction_results", "ad_events", "conversions", "identity_links",
        "experience", "dead_letters")}, partitions=2)
    bus = KafkaBus(tansu.bootstrap, session_timeout_s=2.0)
    store = RedisStore(service_redis_url)  # the service's prefix: read its state directly
    # Every click converts and clicks are frequent, so that a short run has dozens of delayed
    # conversions to join whatever the agent's choices.
    world = BasicWorld(SimulationConfig(seed=3, users=150, opportunities_per_day=1_500, creatives=12),
                       BasicWorldParams(cvr=1.0, base_ctr=(0.2, 0.3, 0.16)))
    driver = SimDriver(world, bus, topics, group=f"{prefix}-driver")
    await bus.start()
    await store.start()
    await driver.start()
    try:
        t0 = world.start_ms
        stats = await feed(driver, days=1, drain_days=16)  # 3-hour traffic slots, then daily drain slots
        assert stats.decisions == stats.requests > 0

        emitted = [c for c in world.conversion_log if c["event_time"] < t0 + 17 * DAY_MS]
        expected = [c for c in emitted if c["in_window"] and c["joinable"]]
        assert len(expected) >= 10, ("the scenario should produce conversions", dict(world.counts), len(world.conversion_log))
        records = await await_join_records(store, [c["id"] for c in emitted], windows_closed_before=t0 + 17 * DAY_MS)
        for c in expected:
            rec = records.get(c["id"])
            assert rec is not None and rec.status == "joined", (c, rec)
            assert sum(m for _, m in rec.credits) == c["value_micros"]
            for decision_id, micros in rec.credits:  # each credit stored once, under its conversion id
                assert (await read_credits(store, decision_id)).get(c["id"]) == micros

        # Exactly once on the experience stream too: one credit id per (decision, conversion).
        seen = await read_experience(bus, topics.experience, f"{prefix}-check", max_polls=200)
        credited = [e for e in seen.values() if e.kind == "credit"]
        by_conv = {c["id"]: sum(e.parts.attribution for e in credited if e.id.endswith(f":credit:{c['id']}"))
                   for c in expected}
        for c in expected:
            assert by_conv[c["id"]] == pytest.approx(c["value_micros"] / 1e6)
        assert any(e.kind == "final" and e.done for e in seen.values())

        for day in range(1):
            ledger = await store.budget("it", period_of(t0) + day)
            assert ledger.budget == 4_000_000
            assert 0 < ledger.spent <= ledger.budget and ledger.reserved == 0
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        await driver.stop()
        await store.stop()
        await bus.stop()
    assert "Traceback" not in out, out[-3000:]
    # the learner was checkpointed on stop, beside the model versions (a restart resumes from it)
    from agent_service.adapters.registry import FileRegistry
    from agent_service.agent.learning.online import OnlineLearner

    learner = OnlineLearner.from_snapshot((tmp_path / "models" / "learner-checkpoint.pt").read_bytes(),
                                          FileRegistry(tmp_path / "models"))
    held = learner.summary()
    assert held["version"] >= 1 and held["records_seen"] > 0 and held["labelled_clicks"] > 0


async def test_hot_swap_metrics_and_rollback_by_command(tansu, service_redis_url, tmp_path: Path) -> None:
    """A version published while serving is taken without a restart and exported as a metric;
    `gaelp admin rollback` (token from the environment) serves the previous weights, and a
    second rollback does not bounce back to the bad version."""
    import json
    import urllib.request

    from agent_service.adapters.registry import FileRegistry

    prefix = f"hs{uuid.uuid4().hex[:6]}"
    config = _config(tmp_path, prefix)
    env_token = {"GAELP_ADMIN_TOKEN": "tok-hs"}
    os.environ.update(env_token)
    try:
        proc, port = await start_serve(config, tansu.bootstrap, service_redis_url)
    finally:
        os.environ.pop("GAELP_ADMIN_TOKEN", None)
    loop = asyncio.get_running_loop()

    def get(path: str) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read().decode()

    def bid(rid: str) -> int:
        body = json.dumps({"id": rid, "imp": [{"id": "1", "bidfloor": 0.5}], "device": {"ifa": f"d-{rid}"}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/openrtb2/bid", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status

    def version() -> float:
        line = next(x for x in get("/metrics").splitlines() if x.startswith("gaelp_bidder_model_version "))
        return float(line.split()[-1])

    def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agent_service.cli", "admin", *args, "--url",
                               f"http://127.0.0.1:{port}"], cwd=ROOT, env={**os.environ, **env_token},
                              capture_output=True, text=True, timeout=60)

    try:
        await loop.run_in_executor(None, bid, "hs0")
        assert await loop.run_in_executor(None, version) == 1
        registry = FileRegistry(tmp_path / "models")
        registry.publish(registry.load(1))  # "a new model": version 2
        deadline = loop.time() + 10
        while await loop.run_in_executor(None, version) != 2:  # hot-swapped, no restart
            assert loop.time() < deadline, "version 2 never served"
            await asyncio.sleep(0.05)
        assert await loop.run_in_executor(None, bid, "hs1") in (200, 204)
        text = await loop.run_in_executor(None, get, "/metrics")
        for name in ("gaelp_stream_consumer_lag_records", "gaelp_bidder_period_spend_usd",
                     "gaelp_bidder_request_duration_seconds_bucket"):
            assert name in text, name
        first = await loop.run_in_executor(None, admin, "rollback")
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["restored_origin"] == 1
        assert await loop.run_in_executor(None, version) == 3
        second = await loop.run_in_executor(None, admin, "rollback")
        assert second.returncode == 1 and "nothing to roll back to" in second.stderr  # never back to 2
        assert registry.latest_version() == 3
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "Traceback" not in out, out[-3000:]
