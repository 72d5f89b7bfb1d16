"""``gaelp users``: the state store's persons to the warehouse ``users`` table and back."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

HELP = "snapshot the store's persons (links, context profiles, journeys) to the warehouse, or restore them"

DESCRIPTION = """\
The persistent user DB: every person the Redis state store holds — its linked devices with the
identity graph's confidence, its context profile and recent activity (what the decision path
reads to build a request's state) with each device's share, and its journey (touches still
within the attribution window, clicks) — as one row of the warehouse table `users`.

gaelp users snapshot --warehouse FILE [--redis URL]
  write every person under a new snapshot id (SCAN in batches: the store keeps serving; the
  snapshot is not a point-in-time copy). Without --warehouse, the [warehouse] config decides
  (DuckDB, or BigQuery through its settings).
gaelp users restore --warehouse FILE [--snapshot ID] [--redis URL]
  (without --warehouse: BigQuery, when the [warehouse] config says backend = "bigquery")
  write the snapshot's persons (default: the newest snapshot) into the store, each replacing
  what the store holds for that person, so a new campaign or a flushed store starts warm.
  Malformed rows are not restored: each is counted and reported with its row number (person
  order) and field; the rest is restored.

Last stdout line: one JSON object (snapshot: {"snapshot", "persons", "seconds", "rows_per_s"};
restore: {"snapshot", "rows", "restored", "errors", "errors_by_field", "seconds", "rows_per_s"}).
Exit status 0 (restore with --strict: 1 when any row was malformed).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["snapshot", "restore"], help="what to do")
    p.add_argument("--warehouse", type=Path, default=None, metavar="FILE",
                   help="DuckDB file (default: the [warehouse] config, DuckDB or BigQuery)")
    p.add_argument("--redis", default=None, metavar="URL", help="redis://HOST:PORT/DB (env GAELP_REDIS)")
    p.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    p.add_argument("--snapshot", default=None, metavar="ID", help="restore: the snapshot to read (default: newest)")
    p.add_argument("--batch", type=int, default=1_000, metavar="N", help="persons per batch (default 1000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--show-errors", type=int, default=10, metavar="N", help="restore: malformed rows to print")
    p.add_argument("--strict", action="store_true", help="restore: exit status 1 when any row was malformed")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import sys

    from agent_service.config import load_config
    from agent_service.errors import ConfigError

    if args.batch < 1:
        raise ConfigError("--batch", "must be >= 1")
    cfg = load_config(args.config)
    if args.redis:
        cfg = cfg.replace("serve", redis=args.redis)
    progress = not args.no_progress and sys.stderr.isatty()
    obj = asyncio.run((_snapshot if args.action == "snapshot" else _restore)(cfg, args, progress))
    print(json.dumps(obj))
    return 1 if args.strict and obj.get("errors") else 0


async def _snapshot(cfg: Any, args: argparse.Namespace, progress: bool) -> dict[str, Any]:
    import time

    from agent_service.adapters.redis_store import RedisStore
    from agent_service.errors import ConfigError
    from agent_service.runtime.userdb import snapshot_users
    from agent_service.runtime.warehouse_sink import open_warehouse

    if args.warehouse is not None:
        cfg = cfg.replace("warehouse", backend="duckdb")
    warehouse = open_warehouse(cfg.warehouse, str(args.warehouse) if args.warehouse else None)
    if warehouse is None:
        raise ConfigError("warehouse.backend", "is 'off': give --warehouse FILE")
    store = RedisStore(cfg.serve.redis, prefix=cfg.serve.key_prefix)
    await store.start()
    try:
        await warehouse.ensure_tables()
        started = int(time.time() * 1000)
        report = await snapshot_users(store, warehouse, f"s{started}", started, args.batch, progress)
    finally:
        await store.stop()
        await warehouse.close()
    print(f"snapshot {report.snapshot}: {report.persons} persons in {report.seconds:.2f} s")
    return {"snapshot": report.snapshot, "persons": report.persons, "seconds": round(report.seconds, 3),
            "rows_per_s": round(report.persons / max(report.seconds, 1e-9), 1)}


async def _restore(cfg: Any, args: argparse.Namespace, progress: bool) -> dict[str, Any]:
    from agent_service.adapters.redis_store import RedisStore
    from agent_service.errors import ConfigError
    from agent_service.runtime import userdb
    from agent_service.units import DAY_S

    warehouse: Any
    latest: Any  # the backend's reads of the users table (userdb)
    count: Any
    rows: Any
    if args.warehouse is not None:
        from agent_service.warehouse.duckdb_warehouse import DuckDBWarehouse

        if not args.warehouse.exists():
            raise ConfigError("--warehouse", f"{args.warehouse} does not exist")
        duck = DuckDBWarehouse(args.warehouse)
        await duck.ensure_tables()
        warehouse = duck
        latest, count, rows = userdb.latest_snapshot, userdb.snapshot_rows, userdb.duckdb_user_rows
    elif cfg.warehouse.backend == "bigquery":
        from agent_service.runtime.warehouse_sink import open_warehouse

        warehouse = open_warehouse(cfg.warehouse)
        latest, count, rows = userdb.bigquery_latest_snapshot, userdb.bigquery_snapshot_rows, userdb.bigquery_user_rows
    else:
        raise ConfigError("--warehouse", "give the DuckDB file to restore from (or [warehouse] backend = 'bigquery')")
    store = RedisStore(cfg.serve.redis, prefix=cfg.serve.key_prefix)
    try:
        await store.start()
        if args.snapshot:
            snapshot, total = args.snapshot, await count(warehouse, args.snapshot)
            if not total:
                raise ConfigError("--snapshot", f"no rows of snapshot {snapshot!r} in the warehouse")
        else:
            snapshot, total = await latest(warehouse)
        ttl_s = int(cfg.join.window_days * DAY_S) + 2 * DAY_S  # as the decision path's writes
        report = await userdb.restore_users(rows(warehouse, snapshot, args.batch), store, snapshot, ttl_s,
                                            args.batch, total, progress, args.show_errors)
    finally:
        await store.stop()
        await warehouse.close()
    print(f"restore {snapshot}: {report.restored} of {report.rows} persons restored, {report.errors} malformed rows, "
          f"{report.seconds:.2f} s")
    for e in report.first_errors:
        print(f"  row {e.row} (person {e.person_id}): {e.field}: {e.reason}")
    if report.errors > len(report.first_errors):
        print(f"  ... {report.errors - len(report.first_errors)} more")
    return {"snapshot": snapshot, "rows": report.rows, "restored": report.restored, "errors": report.errors,
            "errors_by_field": dict(report.errors_by_field), "seconds": round(report.seconds, 3),
            "rows_per_s": round(report.rows / max(report.seconds, 1e-9), 1)}
