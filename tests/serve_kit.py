"""Shared pieces of the tests that run `gaelp serve` as its own process on tansu + Redis."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from agent_service.contracts.codec import decode
from agent_service.contracts.events import Experience
from agent_service.pipeline.outcomes import JoinRecord
from agent_service.ports.bus import EventBus
from agent_service.ports.store import StateStore

ROOT = Path(__file__).resolve().parent.parent
SALT = "integration-test-salt-0123456789"
"""GAELP_ID_SALT of every service these tests start."""
TOPICS = ("bid_requests", "decisions", "auction_results", "ad_events", "conversions", "identity_links",
          "experience", "dead_letters")


def serve_toml(prefix: str, tmp: Path, budget_usd: float, campaign: str, extra: str = "",
               learner: str = "thread") -> str:
    """A service configuration whose topics and consumer group carry ``prefix`` (tests share a broker).

    :param learner: the learner role's backend (``thread`` keeps Ray out of the tests that are not about it).
    """
    topics = "\n".join(f'{k} = "{prefix}.{k.replace("_", "-")}"' for k in TOPICS)
    return f"""
[budget]
daily_usd = {budget_usd}

[join]
allowed_lateness_s = 3600

[topics]
{topics}
partitions = 2

[learner]
backend = "{learner}"
checkpoint_every_s = 1.0

[serve]
group_id = "{prefix}"
session_timeout_s = 2.0
model_dir = "{tmp / 'models'}"
spill_dir = "{tmp / 'spill'}"
campaign = "{campaign}"
{extra}"""


async def start_serve(config: Path, kafka: str, redis_url: str, *args: str,
                      salt: str = SALT) -> tuple[subprocess.Popen[str], int]:
    """Start `gaelp serve --config config *args`; return the process and its HTTP port once it listens."""
    env = {**os.environ, "GAELP_KAFKA": kafka, "GAELP_REDIS": redis_url, "GAELP_HTTP_PORT": "0",
           "GAELP_ID_SALT": salt}
    proc = subprocess.Popen([sys.executable, "-m", "agent_service.cli", "serve", "--config", str(config), *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    loop = asyncio.get_running_loop()
    while True:
        line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 60)
        if not line:
            raise RuntimeError(f"gaelp serve exited with {proc.wait()}")
        match = re.search(r"listening on http://[\d.]+:(\d+)", line)
        if match:
            return proc, int(match.group(1))


async def read_experience(bus: EventBus, topic: str, group: str, idle_polls: int = 5,
                          max_polls: int = 400) -> dict[str, Experience]:
    """Every experience record on ``topic`` by id, read until ``idle_polls`` empty polls in a row;
    a redelivered record must be identical to the first delivery."""
    reader = bus.consumer([topic], group)
    await reader.start()
    seen: dict[str, Experience] = {}
    idle = 0
    try:
        for _ in range(max_polls):
            batch = await reader.getmany(timeout_ms=300, max_records=10_000)
            idle = idle + 1 if not batch else 0
            if seen and idle >= idle_polls:
                break
            for rec in batch:
                exp = decode(rec.value, Experience)
                if exp.id in seen:
                    assert seen[exp.id] == exp, "a redelivered experience record must be identical"
                seen[exp.id] = exp
    finally:
        await reader.stop()
    return seen


async def await_join_records(store: StateStore, conversion_ids: list[str], *, windows_closed_before: int | None = None,
                             patience_s: float = 90.0) -> dict[str, JoinRecord]:
    """The service's join record (``conv:<id>``) of each conversion, polled until every id has one
    and, if asked, every window closing before ``windows_closed_before`` is closed; it gives up
    after ``patience_s`` without progress (a loaded machine is slow, not stuck)."""
    loop = asyncio.get_running_loop()
    records: dict[str, JoinRecord] = {}
    last_progress = loop.time()
    while loop.time() - last_progress < patience_s:
        missing = [i for i in conversion_ids if i not in records]
        for i, raw in zip(missing, await store.peek_many([f"conv:{i}" for i in missing]), strict=True):
            if raw is not None:
                records[i] = decode(raw, JoinRecord)
                last_progress = loop.time()
        if len(records) == len(conversion_ids) and (
                windows_closed_before is None or not await store.due_windows(windows_closed_before, 1)):
            break
        await asyncio.sleep(0.5)
    return records
