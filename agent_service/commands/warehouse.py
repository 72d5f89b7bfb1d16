"""``gaelp warehouse``: the warehouse sink as a process of its own."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write the stream's decisions, events, attributions and experience to DuckDB or BigQuery"
DESCRIPTION = """\
Run the warehouse sink on its own: a consumer (group <serve.group_id>-warehouse) of the
decisions, auction-results, ad-events, conversions and experience topics that writes the
four warehouse tables in batches with idempotent insert ids, committing offsets only after
the rows are stored. Run it beside `gaelp serve --warehouse off` so the bid path never shares
its process with warehouse writes (or let `gaelp serve` run the sink in process, its default).

Reads Kafka and Redis addresses like `gaelp serve` (GAELP_KAFKA, GAELP_REDIS, --config) and
needs the service's GAELP_ID_SALT (conversions' raw ids are pseudonymised before writing).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kafka", default=None, metavar="HOST:PORT", help="Kafka bootstrap servers (env GAELP_KAFKA)")
    p.add_argument("--redis", default=None, metavar="URL", help="redis://HOST:PORT/DB (env GAELP_REDIS)")
    p.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    p.add_argument("--warehouse", choices=("duckdb", "bigquery"), default=None,
                   help="where to write (default duckdb; [warehouse] in the config)")
    p.add_argument("--warehouse-path", default=None, metavar="FILE",
                   help="DuckDB file (env GAELP_WAREHOUSE_DUCKDB; default: beside serve.model_dir)")


def run(args: argparse.Namespace) -> int:
    from agent_service.config import load_config
    from agent_service.runtime import event_loop
    from agent_service.runtime.warehouse_process import run_warehouse_forever

    cfg = load_config(args.config)
    serve = {k: v for k, v in (("kafka", args.kafka), ("redis", args.redis)) if v is not None}
    if serve:
        cfg = cfg.replace("serve", **serve)
    warehouse = {k: v for k, v in (("backend", args.warehouse), ("duckdb_path", args.warehouse_path)) if v}
    if warehouse:
        cfg = cfg.replace("warehouse", **warehouse)
    event_loop.run(run_warehouse_forever(cfg), cfg.serve.event_loop)
    return 0
