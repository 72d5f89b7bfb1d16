"""User DB benchmark: rows per second of ``gaelp users`` snapshot (Redis → DuckDB) and restore
(DuckDB → Redis) on ``--persons`` synthetic persons, against a plain DuckDB insert of the same rows.

In one run, on a throwaway redis-server (loopback) and a DuckDB file in a temp dir:
- ``seed_rows_per_s``: the persons written into Redis with ``import_profiles`` alone (no warehouse);
- ``snapshot_rows_per_s``: ``runtime.userdb.snapshot_users`` — SCAN + ``EXPORT_PROFILES`` batches,
  rows built and validated, written through ``BatchWriter`` into the ``users`` table;
- ``restore_rows_per_s``: after FLUSHALL, ``restore_users`` over ``duckdb_user_rows`` — keyset-paged
  reads, each row checked (``profile_of``), ``IMPORT_PROFILES`` batches;
- baselines: ``duckdb_insert_rows_per_s``, the same validated rows inserted into a fresh DuckDB
  ``users`` table with ``DuckDBWarehouse.insert`` in batches of ``--batch`` (no Redis, no
  row building); ``duckdb_select_rows_per_s``, the snapshot's rows read back with one query;
- ``restored_equal``: the store exported again after the restore equals the persons snapshotted.

Persons (seeded): 1-3 devices (60 % linked to a ``u:`` person, else one ``d:`` device), 1-6 context
buckets, 0-8 touches, a fifth of them clicked. Last stdout line: one JSON object.
Usage: ``flock /work/locks/bench.lock python bench/bench_userdb.py``.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_service.adapters.redis_store import RedisStore
from agent_service.contracts.events import Touch
from agent_service.ports.store import Activity, DeviceShare, PersonProfile
from agent_service.runtime.userdb import duckdb_user_rows, restore_users, snapshot_users
from agent_service.units import DAY_S
from agent_service.units import HOUR_MS as HOUR
from agent_service.warehouse.duckdb_warehouse import DuckDBWarehouse
from agent_service.warehouse.schema import TABLES
from agent_service.warehouse.users import user_row
from tests.servers import RedisServer

T0 = 1_767_225_600_000
TTL = 16 * DAY_S


def persons(n: int, seed: int) -> list[PersonProfile]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randint(1, 3)
        linked = rng.random() < 0.6
        devices = [f"{i:06x}{j}" for j in range(k if linked else 1)]
        person = f"u:{i:08x}" if linked else f"d:{devices[0]}"
        at = T0 + rng.randrange(0, 48 * HOUR)
        shares = []
        totals: dict[int, int] = {}
        for d in devices:
            counts = {rng.randrange(64): rng.randint(1, 4) for _ in range(rng.randint(1, 3))}
            for b, c in counts.items():
                totals[b] = totals.get(b, 0) + c
            shares.append(DeviceShare(d, tuple(sorted(counts.items())), Activity(rng.uniform(0.5, 6), rng.uniform(0, 2), at)))
        activity = Activity(sum(s.activity.requests for s in shares), sum(s.activity.search for s in shares), at)
        journey = tuple(Touch(decision_id=f"r{i}-{j}:1", event_time=at - j * HOUR, channel=rng.choice(("social", "display")),
                              creative=rng.randrange(4), segment=rng.randrange(5), device_id=rng.choice(devices),
                              cost_micros=rng.randrange(5_000)) for j in range(rng.randint(0, 8)))
        journey = tuple(sorted(journey, key=lambda t: (t.event_time, t.decision_id)))
        clicks = tuple(sorted(t.decision_id for t in journey if rng.random() < 0.2))
        out.append(PersonProfile(person, tuple((d, round(rng.uniform(0.6, 1.0), 3) if linked else 1.0) for d in devices)
                                 if linked else (), tuple(sorted(totals.items())), activity,
                                 tuple(shares), journey, clicks))
    return out


async def export_all(store: RedisStore, batch: int) -> dict[str, PersonProfile]:
    out: dict[str, PersonProfile] = {}
    cursor = ""
    while True:
        rows, cursor = await store.export_profiles(cursor, batch)
        out.update((r.person_id, r) for r in rows)
        if not cursor:
            return out


async def run(n: int, batch: int, seed: int) -> dict:
    data = persons(n, seed)
    with tempfile.TemporaryDirectory(prefix="gaelp-bench-userdb-") as tmp, RedisServer() as server:
        store = RedisStore(server.url)
        await store.start()
        wh = DuckDBWarehouse(Path(tmp) / "users.duckdb")
        base = DuckDBWarehouse(Path(tmp) / "baseline.duckdb")
        try:
            await wh.ensure_tables()
            await base.ensure_tables()
            t0 = time.perf_counter()
            for k in range(0, n, batch):
                await store.import_profiles(data[k:k + batch], TTL)
            seed_s = time.perf_counter() - t0
            print(f"seeded {n} persons into Redis in {seed_s:.2f} s", file=sys.stderr)

            snap = await snapshot_users(store, wh, "s1", T0, batch)
            print(f"snapshot: {snap.persons} rows in {snap.seconds:.2f} s", file=sys.stderr)

            await store.redis.flushall()
            report = await restore_users(duckdb_user_rows(wh, "s1", batch), store, "s1", TTL, batch, n)
            print(f"restore: {report.restored} rows in {report.seconds:.2f} s ({report.errors} malformed)",
                  file=sys.stderr)
            equal = await export_all(store, batch) == {p.person_id: p for p in data}

            rows = [TABLES["users"].validate(user_row(p, "s1", T0)) for p in data]
            t0 = time.perf_counter()
            for k in range(0, n, batch):
                await base.insert("users", rows[k:k + batch])
            insert_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            got = await wh.query("SELECT * FROM users WHERE snapshot = 's1'")
            select_s = time.perf_counter() - t0
            assert len(got) == n
        finally:
            await store.stop()
            await wh.close()
            await base.close()
    return {"persons": n, "batch": batch, "seed": seed, "seed_rows_per_s": round(n / seed_s),
            "snapshot_rows": snap.persons, "snapshot_s": round(snap.seconds, 2),
            "snapshot_rows_per_s": round(snap.persons / snap.seconds),
            "restore_rows": report.restored, "restore_errors": report.errors, "restore_s": round(report.seconds, 2),
            "restore_rows_per_s": round(report.restored / report.seconds),
            "duckdb_insert_rows_per_s": round(n / insert_s), "duckdb_select_rows_per_s": round(n / select_s),
            "restored_equal": equal}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persons", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args.persons, args.batch, args.seed))))


if __name__ == "__main__":
    main()
