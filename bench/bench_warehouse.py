"""Warehouse benchmark: rows per second through BatchWriter into DuckDB, and loss/duplicates under failures.

In one run:
- ``duckdb_rows_per_s``: 100k event rows through :class:`BatchWriter` (batches of
  ``--batch``) into a DuckDB file, median of ``--repeats``; with ``in_memory_rows_per_s``
  (the fake warehouse) as the baseline of the writer's own overhead;
- ``failures``: the same rows into the in-memory warehouse with 30% of requests failing
  transiently (a third of those after writing half the batch — an unknown outcome): rows
  lost and rows resent after an acknowledgement (both expected 0), and rows resent after an
  unknown outcome, which the insert id deduplicates (stored once).

Last stdout line: one JSON object. Usage: ``python bench/bench_warehouse.py``.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_service.warehouse import BatchConfig, BatchWriter, InMemoryWarehouse
from agent_service.warehouse.duckdb_warehouse import DuckDBWarehouse


def rows(n: int) -> list[dict]:
    return [{"event_id": f"e{i}", "event_time": 1_700_000_000_000 + i, "kind": "impression",
             "decision_id": f"d{i}", "cost_micros": 2500, "payload": {"slot": i % 7}} for i in range(n)]


async def _no_wait(_: float) -> None:
    await asyncio.sleep(0)


async def through(warehouse, data: list[dict], batch: int) -> float:
    t0 = time.perf_counter()
    writer = BatchWriter(warehouse, BatchConfig(max_rows=batch, max_buffered_rows=max(batch * 20, 10_000),
                                                seed=0), sleep=_no_wait)
    for i in range(0, len(data), 1000):
        await writer.add_many("events", data[i:i + 1000])
    await writer.close()
    return len(data) / (time.perf_counter() - t0)


class Flaky(InMemoryWarehouse):
    def __init__(self, rate: float, seed: int) -> None:
        super().__init__()
        self.rng = random.Random(seed)
        self.rate = rate

        self.acked: set[str] = set()
        self.resent_after_ack = 0

    async def insert(self, table, batch):
        ids = [r["event_id"] for r in batch]
        self.resent_after_ack += sum(1 for i in ids if i in self.acked)
        if self.rng.random() < self.rate:
            self.fail_next(1, written_fraction=0.5 if self.rng.random() < 1 / 3 else 0.0)
        outcome = await super().insert(table, batch)
        self.acked.update(i for k, i in enumerate(ids) if k not in outcome.retry and k not in outcome.rejected)
        return outcome


async def run(args: argparse.Namespace) -> dict:
    data = rows(args.rows)
    duck, mem = [], []
    for rep in range(args.repeats):
        path = Path(tempfile.mkdtemp(prefix="gaelp-bench-wh-")) / f"w{rep}.duckdb"
        wh = DuckDBWarehouse(path)
        await wh.ensure_tables()
        duck.append(await through(wh, data, args.batch))
        (count,) = (await wh.query("SELECT count(*) FROM events"))[0]
        assert count == len(data)
        await wh.close()
        mem.append(await through(InMemoryWarehouse(), data, args.batch))
    flaky = Flaky(0.3, args.seed)
    writer = BatchWriter(flaky, BatchConfig(max_rows=args.batch, max_attempts=50, seed=0), sleep=_no_wait)
    await writer.add_many("events", data)
    await writer.close()
    written = flaky.tables["events"]
    return {
        "bench": "warehouse",
        "rows": args.rows,
        "batch": args.batch,
        "duckdb_rows_per_s": round(statistics.median(duck)),
        "in_memory_rows_per_s": round(statistics.median(mem)),
        "failures": {
            "request_failure_rate": 0.3,
            "requests": len(flaky.requests),
            "retries": writer.retries,
            "rows_lost": len(data) - len(written),
            "rows_resent_after_acknowledgement": flaky.resent_after_ack,
            "rows_resent_after_unknown_outcome_deduplicated_by_id": sum(1 for n in flaky.writes.values() if n > 1),
        },
        "repeats": args.repeats,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    print(json.dumps(asyncio.run(run(ap.parse_args()))))


if __name__ == "__main__":
    main()
