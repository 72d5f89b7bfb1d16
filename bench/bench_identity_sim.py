"""Identity on the simulator's ground truth: the stream's identity graph vs "login links only".

In one run, on the identity links the calibrated stream world (``simulators.GaelpWorld``)
emits while it serves ``--days`` of traffic (logins, and scored device → person matches of
which some name the wrong person), with ids pseudonymised as at the service's edge:

- ``world``: the links through the real identity-links handler
  (``agent_service.pipeline.identity_links``: identity graph + state store, batches of
  ``--batch``), scored on what the store then assigns, against an identity graph fed only
  the login links (the baseline), both by pairwise precision / recall / F1 of device → person;
- ``world_matcher``: the same plus a device-to-device matcher of the kind the graph's caps
  exist for (seeded, drawn from the world's truth: same-person matches on the home IP,
  housemate false matches, carrier-NAT IPs shared by many devices, and the matcher's later
  corrections revoking some false matches), so the shared-IP cap and revocation act;
- handler throughput (links per second, in-process adapters; ``--redis`` adds the Redis
  store + Redis graph on a throwaway loopback redis-server, and checks they assign the same).

Last stdout line: one JSON object. Usage: ``python bench/bench_identity_sim.py [--users 5000 --days 3]``.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_service.adapters.memory_store import MemoryStore
from agent_service.adapters.redis_identity import RedisIdentityGraph
from agent_service.adapters.redis_store import RedisStore
from agent_service.config import GaelpConfig, SimulationConfig
from agent_service.contracts.events import IdentityLink
from agent_service.identity import InMemoryIdentityGraph, evaluate_identity
from agent_service.pipeline.identity_links import IdentityLinks, graph_config
from agent_service.pipeline.pseudonym import Pseudonymizer
from agent_service.ports.store import StateStore
from agent_service.runtime.identity_eval import login_only_assignments, score_dict, store_assignments
from agent_service.units import DAY_MS
from simulators.gaelp_world import GaelpWorld


def world_links(args: argparse.Namespace) -> tuple[list[IdentityLink], dict[str, str]]:
    """The world's identity links over ``days`` of traffic (no ads shown), and the truth."""
    world = GaelpWorld(SimulationConfig(seed=args.seed, users=args.users, opportunities_per_day=args.opportunities))
    slot = DAY_MS // 96
    links: list[IdentityLink] = []
    t = world.start_ms
    end = t + int(args.days * DAY_MS)
    while t < end:
        world.requests(t, t + slot)
        world.resolve([])
        links += [ev.record for ev in world.due(t, t + slot) if ev.role == "identity_links"]
        t += slot
    links += [ev.record for ev in world.due(end, end + 30 * DAY_MS) if ev.role == "identity_links"]
    return links, world.device_truth()


def matcher_links(truth: dict[str, str], seed: int, t0: int) -> list[IdentityLink]:
    """A seeded device-to-device matcher over the world's devices (see the module docstring)."""
    rng = np.random.default_rng(seed)
    by_person: dict[str, list[str]] = {}
    for device, person in sorted(truth.items()):
        by_person.setdefault(person, []).append(device)
    persons = sorted(by_person)
    order = [persons[i] for i in rng.permutation(len(persons))]
    out: list[IdentityLink] = []

    def add(a: str, b: str, score: float, ip: str) -> IdentityLink:
        link = IdentityLink(id=f"mm-{len(out)}", event_time=t0 + len(out), device_id=a, other_device_id=b,
                            kind="probabilistic", score=round(float(score), 4), ip=ip)
        out.append(link)
        return link

    false: list[IdentityLink] = []
    k = 0
    household = 0
    while k < len(order):  # households of 1-4 persons sharing a home IP
        members = order[k:k + int(rng.integers(1, 5))]
        k += len(members)
        ip = f"hh-{household}"
        household += 1
        for p in members:
            devs = by_person[p]
            for i in range(len(devs) - 1):
                if rng.random() < 0.5:
                    add(devs[i], devs[i + 1], rng.beta(12, 1.5), ip)
        for i in range(len(members) - 1):
            if rng.random() < 0.3:
                a, b = by_person[members[i]][0], by_person[members[i + 1]][0]
                link = add(a, b, rng.beta(5, 3), ip)
                if link.score >= 0.9:
                    false.append(link)
    devices = sorted(truth)
    for n in range(5):  # carrier NAT: many unrelated devices, plausible scores
        crowd = [devices[int(i)] for i in rng.choice(len(devices), size=min(40, len(devices)), replace=False)]
        for i in range(len(crowd) - 1):
            add(crowd[i], crowd[i + 1], rng.beta(20, 1), f"nat-{n}")
    for link in false:  # the matcher's corrections, later
        if rng.random() < 0.5:
            out.append(IdentityLink(id=link.id, event_time=link.event_time + DAY_MS, device_id=link.device_id,
                                    other_device_id=link.other_device_id, kind="probabilistic", score=link.score,
                                    ip=link.ip, revoked=True))
    return out


def pseudonymise(links: list[IdentityLink], ids: Pseudonymizer) -> list[IdentityLink]:
    """As ``Flow`` does at the edge."""
    import msgspec

    return [msgspec.structs.replace(x, device_id=ids(x.device_id), person_id=ids(x.person_id) if x.person_id else "",
                                    other_device_id=ids(x.other_device_id) if x.other_device_id else None,
                                    ip=ids(x.ip) if x.ip else None) for x in links]


async def through_handler(store: StateStore, graph: Any, links: list[IdentityLink], batch: int,
                          ids: Pseudonymizer) -> tuple[IdentityLinks, float]:
    handler = IdentityLinks(GaelpConfig(), store, graph)
    wire = pseudonymise(links, ids)
    t0 = time.perf_counter()
    for i in range(0, len(wire), batch):
        await handler.handle(wire[i:i + batch])
    return handler, len(wire) / (time.perf_counter() - t0)


async def scenario(links: list[IdentityLink], truth: dict[str, str], args: argparse.Namespace,
                   redis_url: str | None) -> dict[str, Any]:
    ids = Pseudonymizer(b"bench-identity-sim-salt-0123456789")
    cfg = GaelpConfig()
    devices = sorted(truth)
    store = MemoryStore()
    handler, rate = await through_handler(store, InMemoryIdentityGraph(graph_config(cfg)), links, args.batch, ids)
    assigned = await store_assignments(store, ids, devices)
    graph = evaluate_identity(assigned, truth)
    login = evaluate_identity(await login_only_assignments(links), truth)
    out: dict[str, Any] = {
        "links": len(links), "graph": score_dict(graph), "login_only": score_dict(login),
        "f1_gain_over_login_only": round(graph.f1 - login.f1, 4),
        "statuses": dict(sorted(handler.statuses.items())), "memory_links_per_s": round(rate),
    }
    if redis_url is not None:
        tag = uuid.uuid4().hex[:8]
        rstore = RedisStore(redis_url, prefix=f"bis{tag}:")
        await rstore.start()
        rgraph = RedisIdentityGraph.from_url(redis_url, graph_config(cfg.replace("identity", key_prefix=f"bis{tag}:{{id}}:")))
        try:
            _, rrate = await through_handler(rstore, rgraph, links, args.batch, ids)
            out["redis_links_per_s"] = round(rrate)
            out["redis_equals_memory"] = await store_assignments(rstore, ids, devices) == assigned
        finally:
            await rgraph.clear()
            await rgraph.close()
            await rstore.stop()
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    links, truth = world_links(args)
    extra = matcher_links(truth, args.seed + 1, links[-1].event_time if links else 0)
    cfg = GaelpConfig()
    result: dict[str, Any] = {
        "bench": "identity_sim", "users": args.users, "days": args.days, "devices": len(truth),
        "true_pairs": evaluate_identity({}, truth).true_pairs, "batch": args.batch,
        "config": {"merge_threshold": cfg.join.identity_min_score,
                   "max_component_nodes": cfg.identity.max_component_nodes,
                   "max_ip_devices": cfg.identity.max_ip_devices},
    }
    if args.redis:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.servers import RedisServer

        with RedisServer() as server:
            result["world"] = await scenario(links, truth, args, server.url)
            result["world_matcher"] = await scenario(links + extra, truth, args, server.url)
    else:
        result["world"] = await scenario(links, truth, args, None)
        result["world_matcher"] = await scenario(links + extra, truth, args, None)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=5_000)
    ap.add_argument("--opportunities", type=int, default=20_000, help="opportunities per day")
    ap.add_argument("--days", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=500, help="links per handler call (a stream batch)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--redis", action="store_true", help="also run the Redis adapters (throwaway redis-server)")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
