"""``gaelp feed``: drive a simulated world into a running ``gaelp serve`` through Kafka."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from agent_service.commands.flags import add_flags, config_from_args

HELP = "feed a simulated world into a running service through Kafka (shadow traffic, demos, tests)"
DESCRIPTION = """\
Publish a simulated world's traffic to the service's Kafka topics in event time: bid requests,
then (after the service's decisions arrive on the decisions topic) auction results,
impressions and clicks, and later the delayed conversions and identity links, with event-time
ticks on every partition. Prints a JSON summary as its last line.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kafka", default=None, metavar="HOST:PORT", help="Kafka bootstrap servers (env GAELP_KAFKA)")
    p.add_argument("--config", type=Path, default=None, help="TOML configuration (topics, simulation)")
    add_flags(p, "simulation", ["days", "seed", "drain_days"])
    p.add_argument("--realtime-factor", type=float, default=None,
                   help="event-time seconds per wall second (default: as fast as the service answers)")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.kafka:
        cfg = cfg.replace("serve", kafka=args.kafka)
    stats = asyncio.run(_feed(cfg, args))
    print(json.dumps(stats._asdict()))
    return 0


async def _feed(cfg, args):  # type: ignore[no-untyped-def]
    from agent_service.adapters.kafka_bus import KafkaBus
    from agent_service.runtime.driver import SimDriver
    from agent_service.runtime.feed import feed
    from simulators import build_world

    bus = KafkaBus(cfg.serve.kafka, session_timeout_s=cfg.serve.session_timeout_s)
    await bus.start()
    driver = SimDriver(build_world(cfg.simulation, cfg.join.window_days), bus, cfg.topics, group=f"{cfg.serve.group_id}-feed")
    await driver.start()
    try:
        return await feed(driver, cfg.simulation.days, cfg.simulation.drain_days, realtime_factor=args.realtime_factor,
                          progress=True)
    finally:
        await driver.stop()
        await bus.stop()
