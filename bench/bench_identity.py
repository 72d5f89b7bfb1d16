"""Identity benchmark: links per second (Redis, pipelined Lua) vs the in-memory graph, and quality.

In one run, on the same seeded synthetic world (``agent_service.identity.synthetic``:
persons with 1–3 devices, households sharing an IP, carrier-NAT IPs; a stand-in for the
simulator's ground truth):
- ingest throughput of :class:`RedisIdentityGraph` (a throwaway ``redis-server`` on a free
  loopback port, started and stopped here) and of :class:`InMemoryIdentityGraph`,
  medians over ``--repeats`` runs, with the ratio;
- resolve throughput (Redis, ``resolve_many`` in chunks);
- pairwise precision / recall / F1 of device → person, for the full graph, for
  deterministic links only, and without the IP fan-out cap (to show what it buys).

Last stdout line: one JSON object. Usage: ``python bench/bench_identity.py [--persons 50000]``.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_service.adapters.redis_identity import RedisIdentityGraph
from agent_service.identity import (
    IdentityConfig,
    InMemoryIdentityGraph,
    evaluate_identity,
    generate_identity_world,
)
from tests.servers import RedisServer


async def run(args: argparse.Namespace) -> dict:
    world = generate_identity_world(args.persons, seed=args.seed)
    links = world.links
    cfg = IdentityConfig()
    mem_rates, redis_rates = [], []
    with RedisServer() as server:
        url = server.url
        for rep in range(args.repeats):
            mem = InMemoryIdentityGraph(cfg)
            t0 = time.perf_counter()
            await mem.add_links(links)
            mem_rates.append(len(links) / (time.perf_counter() - t0))

            rcfg = IdentityConfig(key_prefix=f"bench{rep}:{{id}}:")
            graph = RedisIdentityGraph.from_url(url, rcfg, batch_size=args.batch, pipeline_depth=args.depth)
            t0 = time.perf_counter()
            await graph.add_links(links)
            redis_rates.append(len(links) / (time.perf_counter() - t0))
            if rep == args.repeats - 1:
                devices = list(world.truth)
                t0 = time.perf_counter()
                for i in range(0, len(devices), 1000):
                    await graph.resolve_many(devices[i:i + 1000])
                resolve_rate = len(devices) / (time.perf_counter() - t0)
                redis_assign = await graph.assignments()
                mem_assign = await mem.assignments()
            await graph.clear()
            await graph.close()

    full = evaluate_identity(mem_assign, world.truth)
    det = InMemoryIdentityGraph(cfg)
    await det.add_links([link for link in links if link.deterministic])
    det_score = evaluate_identity(await det.assignments(), world.truth)
    nocap = InMemoryIdentityGraph(IdentityConfig(max_ip_devices=10**9, max_component_nodes=10**9))
    await nocap.add_links(links)
    nocap_score = evaluate_identity(await nocap.assignments(), world.truth)
    med = statistics.median

    def q(s):
        return {"precision": round(s.precision, 4), "recall": round(s.recall, 4), "f1": round(s.f1, 4)}

    return {
        "bench": "identity",
        "persons": args.persons,
        "devices": len(world.truth),
        "links": len(links),
        "redis_links_per_s": round(med(redis_rates)),
        "memory_links_per_s": round(med(mem_rates)),
        "redis_over_memory": round(med(redis_rates) / med(mem_rates), 3),
        "redis_resolve_per_s": round(resolve_rate),
        "redis_equals_memory": redis_assign == mem_assign,
        "batch_size": args.batch,
        "pipeline_depth": args.depth,
        "quality": q(full),
        "quality_deterministic_only": q(det_score),
        "quality_without_caps": q(nocap_score),
        "config": {"merge_threshold": cfg.merge_threshold, "max_component_nodes": cfg.max_component_nodes,
                   "max_ip_devices": cfg.max_ip_devices},
        "repeats": args.repeats,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=100, help="links per Lua call")
    ap.add_argument("--depth", type=int, default=10, help="Lua calls per pipelined round trip")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
