"""GA4 ingestion benchmark: events per second from an NDJSON export into DuckDB, beside two baselines
on the same file in the same run.

The file is the synthetic export of ``tests/ga4_fixtures.py`` (``bq extract`` style: INT64 as
strings, nested params; ~1.1 kB a row) with its ten malformed rows, scaled to ``--events``.
Measured, median of ``--repeats``:

- ``ingest_events_per_s``: what ``gaelp ingest ga4`` does — read, decode, sessionise, map channels,
  and write the ga4_* tables of a fresh DuckDB file in one transaction (events / total seconds);
  with ``parse_s`` and ``store_s`` apart;
- ``json_loads_rows_per_s``: only ``json.loads`` of each line (no validation, no output);
- ``duckdb_read_json_rows_per_s``: DuckDB materialising the file with ``read_json_auto``
  (``ignore_errors``; its own threads, ``duckdb_threads``) — DuckDB's own reader, no sessions.

Last stdout line: one JSON object. Usage: ``python bench/bench_ga4_ingest.py [--events 200000]``.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb

from agent_service.ingest.ga4 import Ga4Builder
from agent_service.ingest.sources import read_file
from agent_service.ingest.store import Ga4Store
from tests.ga4_fixtures import synthetic_export

FLOOR = 50_000
"""Issue 19's floor: GA4 events per second from NDJSON into DuckDB."""


def make_file(path: Path, events: int, seed: int) -> int:
    """Write the synthetic export (all days in one file) until it holds ``events`` rows; returns the count."""
    export = synthetic_export(seed, users=max(1, events // 6))  # ~7.5 events a user: enough rows
    rows = export.rows
    if len(rows) < events:
        raise SystemExit(f"the generator made {len(rows)} rows < {events}: raise users per event")
    lines = [json.dumps(r) for r in rows[:events]]
    for k, (text, _) in enumerate(export.malformed):
        lines.insert(1 + k * (len(lines) // len(export.malformed)), text)
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def ingest_once(path: Path, db: Path) -> dict:
    t0 = time.perf_counter()
    builder = Ga4Builder(str(path))
    read_file(path, builder)
    batch = builder.finish()
    t1 = time.perf_counter()
    with Ga4Store(db) as store:
        store.replace(batch)
    t2 = time.perf_counter()
    return {"seconds": t2 - t0, "parse_s": t1 - t0, "store_s": t2 - t1, "events": batch.stats.events,
            "errors": len(batch.errors), "sessions": len(batch.sessions), "conversions": len(batch.conversions)}


def json_loads_once(path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    with open(path, "rb") as f:
        for line in f:
            try:
                json.loads(line)
            except ValueError:
                pass
            n += 1
    return time.perf_counter() - t0, n


def duckdb_once(path: Path) -> tuple[float, int, int]:
    con = duckdb.connect()
    threads = int(con.execute("SELECT current_setting('threads')").fetchone()[0])
    t0 = time.perf_counter()
    con.execute("CREATE TABLE t AS SELECT * FROM read_json_auto(?, format='newline_delimited', ignore_errors=true)",
                [str(path)])
    dt = time.perf_counter() - t0
    n = con.execute("SELECT count(*) FROM t").fetchone()[0]
    con.close()
    return dt, int(n), threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gaelp-bench-ga4-"))
    path = work / "events.json"
    t0 = time.perf_counter()
    lines = make_file(path, args.events, args.seed)
    print(f"generated {lines} lines ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)

    runs, loads, duck = [], [], []
    for rep in range(args.repeats):
        runs.append(ingest_once(path, work / f"w{rep}.duckdb"))
        loads.append(json_loads_once(path))
        duck.append(duckdb_once(path))
        r = runs[-1]
        print(f"repeat {rep}: ingest {r['events'] / r['seconds']:,.0f} ev/s (parse {r['parse_s']:.2f} s, "
              f"store {r['store_s']:.2f} s), json.loads {loads[-1][1] / loads[-1][0]:,.0f} rows/s, "
              f"duckdb read_json {duck[-1][1] / duck[-1][0]:,.0f} rows/s", file=sys.stderr)

    med = statistics.median
    events = runs[0]["events"]
    ingest_rate = med(r["events"] / r["seconds"] for r in runs)
    loads_rate = med(n / s for s, n in loads)
    duck_rate = med(n / s for s, n, _ in duck)
    out = {
        "bench": "ga4_ingest",
        "events": events,
        "lines": lines,
        "file_mb": round(path.stat().st_size / 1e6, 2),
        "repeats": args.repeats,
        "ingest_events_per_s": round(ingest_rate),
        "parse_s": round(med(r["parse_s"] for r in runs), 3),
        "store_s": round(med(r["store_s"] for r in runs), 3),
        "json_loads_rows_per_s": round(loads_rate),
        "duckdb_read_json_rows_per_s": round(duck_rate),
        "duckdb_rows": duck[0][1],
        "duckdb_threads": duck[0][2],
        "ingest_vs_json_loads": round(ingest_rate / loads_rate, 3),
        "ingest_vs_duckdb_read_json": round(ingest_rate / duck_rate, 3),
        "sessions": runs[0]["sessions"],
        "conversions": runs[0]["conversions"],
        "errors": runs[0]["errors"],
        "floor_events_per_s": FLOOR,
        "meets_floor": ingest_rate >= FLOOR,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
