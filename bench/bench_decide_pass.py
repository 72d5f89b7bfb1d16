"""CPU cost of one pass of the bid batcher's decide path, in process: ``Decider.decide`` on the
memory store (no HTTP, no Redis), as ``gaelp serve`` builds it (64 creative slots, the generated
catalogue, the registry's version 1), at 1, 7 and 14 requests per pass.

The requests look like ``bench_serve.py``'s (one imp, distinct devices and sites, no journey:
no outcomes are fed). Batch sizes are interleaved in short chunks so the machine's drift hits
each alike; the figure per size is the median chunk. CPU is the process's (``process_time``).
Prints one line per size and, last, one JSON object.

For an A/B, run this same file against another tree: ``--tree /path/to/base`` imports that
tree's ``agent_service`` instead of this one's.

    .venv/bin/python bench/bench_decide_pass.py [--passes 400] [--rounds 5] [--tree PATH]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, as serve
    os.environ.setdefault(_var, "1")

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

SIZES = (1, 7, 14)
T_NOON = 1_767_225_600_000 + 12 * 3_600_000  # 2026-01-01T12:00Z


def _service(root: Path) -> Any:
    sys.path.insert(0, str(root))
    from agent_service.adapters.memory_store import MemoryStore
    from agent_service.adapters.registry import MemoryRegistry
    from agent_service.config import GaelpConfig
    from agent_service.creatives import CatalogueFile
    from agent_service.metrics import Metrics
    from agent_service.runtime.assembly import build_learner, build_service

    cfg = GaelpConfig().replace("budget", daily_usd=1_000_000.0, pacing_slack=1.0)
    creatives = cfg.creatives.capacity
    registry = MemoryRegistry()
    build_learner(cfg, registry, creatives=creatives, seed=0)
    catalogue = CatalogueFile(cfg.creatives.catalogue, cfg.creatives.count, creatives, cfg.creatives.reload_s)
    service = build_service(cfg, MemoryStore(), registry, Metrics(), {}, clock=lambda: T_NOON, campaign="bench",
                            creatives=creatives, seed=1, catalogue=catalogue)
    return service.decider


def _requests(n: int, start: int) -> list[Any]:
    from agent_service.contracts.openrtb import BidRequest, Device, Imp, Site, User

    out = []
    for k in range(start, start + n):
        dev = (k * 7919) % 100_000
        out.append((BidRequest(id=f"r{k}", at=2, tmax=120, cur=["USD"],
                               imp=[Imp(id="1", bidfloor=0.5, bidfloorcur="USD")],
                               site=Site(id=f"s{dev % 97}", domain=f"site{dev % 97}.example", cat=[f"IAB{dev % 20 + 1}"],
                                         page=f"https://site{dev % 97}.example/a"),
                               device=Device(ifa=f"dev-{dev}", devicetype=dev % 3 + 2, ua="Mozilla/5.0",
                                             ip=f"198.51.{dev % 200}.{dev % 250 + 1}"),
                               user=User(id=f"u{dev}")), T_NOON + k))
    return out


async def _run(decider: Any, passes: int, rounds: int) -> dict[int, list[float]]:
    counter = 0

    async def chunk(size: int, n: int) -> float:
        nonlocal counter
        batches = [_requests(size, counter + i * size) for i in range(n)]  # built outside the timing
        counter += size * n
        t0 = time.process_time()
        for b in batches:
            await decider.decide(b)
        return (time.process_time() - t0) / n * 1e6

    for size in SIZES:  # warm-up: first-use caches, the version load
        await chunk(size, 30)
    per_pass: dict[int, list[float]] = {s: [] for s in SIZES}
    for r in range(rounds):
        for size in SIZES if r % 2 == 0 else SIZES[::-1]:
            per_pass[size].append(await chunk(size, passes))
    return per_pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passes", type=int, default=400, help="passes per chunk")
    ap.add_argument("--rounds", type=int, default=5, help="chunks per batch size (interleaved)")
    ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1], help="tree to import")
    args = ap.parse_args()
    decider = _service(args.tree.resolve())
    per_pass = asyncio.run(_run(decider, args.passes, args.rounds))
    sizes = {}
    for s in SIZES:
        med = statistics.median(per_pass[s])
        sizes[str(s)] = {"us_per_pass": round(med, 1), "us_per_request": round(med / s, 1),
                         "chunks": [round(x, 1) for x in per_pass[s]]}
        print(f"batch {s:>2}: {med:8.1f} µs CPU per pass, {med / s:7.1f} per request "
              f"(chunks {', '.join(f'{x:.0f}' for x in per_pass[s])})")
    ratio = sizes["7"]["us_per_request"] / sizes["14"]["us_per_request"]
    print(f"per request, batch 7 / batch 14: {ratio:.3f}")
    print(json.dumps({"bench": "decide_pass", "tree": str(args.tree), "passes": args.passes, "rounds": args.rounds,
                      "sizes": sizes, "ratio_7_14": round(ratio, 3)}))


if __name__ == "__main__":
    main()
