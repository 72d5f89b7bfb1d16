"""Redis time per item of the stream worker's store calls, on a fresh redis-server.

20,000 reserved decisions, then the calls as the worker makes them: auction results in slices of
400 (half won), the same again (redelivered), clicks, parked conversions, impressions' decision
checks, identity assignments (devices moving their touches, then unchanged). Prints one JSON
object: per call, (Redis command time from INFO commandstats, Redis process CPU) in µs per item.
Run each tree's own copy to compare (the imports follow the script's tree).

    .venv/bin/python bench/bench_store_stream.py
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec

from agent_service.adapters.redis_store import RedisStore
from agent_service.contracts.events import Action, Decision, Touch
from agent_service.ports.store import ClickEffect, DecisionDraft, IdentityAssignment, ResultEffect
from tests.servers import RedisServer

N = 20_000
TTL = 86_400


def _decision(i: int) -> Decision:
    device = f"dev{i % (N // 3)}"
    return Decision(id=f"r{i}", event_time=1_000_000 + i, request_id=f"r{i}", imp_id="1", person_id=f"d:{device}",
                    device_id=device, campaign="c", state=[0.5] * 8, propensity=0.5, model_version=1,
                    action=Action(bid_cpm_micros=2_000_000, creative=1, channel="social", segment=0))


async def main() -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    with RedisServer() as server:
        store = RedisStore(server.url)
        await store.start()
        r = store.redis
        pid = server.proc.pid  # type: ignore[union-attr]

        def cpu() -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        async def measure(name: str, run: Callable[[], Awaitable[None]], count: int) -> None:
            await r.config_resetstat()
            c0 = cpu()
            await run()
            stats = await r.info("commandstats")
            used = sum(v["usec"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_exists", "cmdstat_mget"))
            out[name] = (round(used / count, 2), round((cpu() - c0) / count * 1e6, 2))

        await store.init_budget("c", 0, 10**12)
        for k in range(0, N, 1000):
            await store.reserve_and_put("c", [DecisionDraft(_decision(i), 2_000, 0, msgspec.structs.replace(
                _decision(i), bid=False)) for i in range(k, k + 1000)], TTL)
        payload = b"x" * 600
        effects = []
        for i in range(N):
            d, won = _decision(i), i % 2 == 0
            touch = Touch(decision_id=d.id, event_time=d.event_time, channel="social", creative=1, segment=0,
                          device_id=d.device_id, cost_micros=1000) if won else None
            effects.append(ResultEffect(f"outcome:{d.id}", payload, "c", 0, d.id, 1000 if won else 0, d.device_id,
                                        touch, d.event_time + 10**6))

        async def results(last: int = N) -> None:
            for k in range(0, last, 400):
                await store.record_results(effects[k:k + 400], TTL)
        await measure("record_results", results, N)
        await measure("record_results redelivered", lambda: results(4_000), 4_000)
        clicks = [ClickEffect(f"click:r{i}", payload, f"dev{i % (N // 3)}", f"r{i}") for i in range(0, N, 20)]

        async def click() -> None:
            for k in range(0, len(clicks), 400):
                await store.record_clicks(clicks[k:k + 400], TTL)
        await measure("record_clicks", click, len(clicks))
        items = [(f"c{i}", 1000 + i, payload) for i in range(2000)]
        await measure("park_many", lambda: store.park_many(items), len(items))
        ids = [f"r{i}" for i in range(0, N, 2)]

        async def check() -> None:
            for k in range(0, len(ids), 2000):
                await store.stored_decisions(ids[k:k + 2000])
        await measure("stored_decisions", check, len(ids))
        devices = [f"dev{i}" for i in range(0, N // 3, 3)]

        async def assign() -> None:
            for k in range(0, len(devices), 1000):
                await store.assign_identities([IdentityAssignment(d, f"p{j // 2}", 0.9)
                                               for j, d in enumerate(devices[k:k + 1000])], TTL)
        await measure("assign_identities moving", assign, len(devices))
        await measure("assign_identities unchanged", assign, len(devices))
        await store.stop()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
