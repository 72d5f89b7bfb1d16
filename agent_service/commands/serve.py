"""``gaelp serve``: the streaming service on Kafka + Redis with the OpenRTB bid endpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run the streaming service on Kafka + Redis with the OpenRTB bid endpoint and /metrics"
DESCRIPTION = """\
Run GAELP as a service: Faust agents consume bid requests, auction results, ad events,
identity links and conversions from Kafka, keep journeys, identity and budgets in Redis,
join delayed conversions within the attribution window and stream experience to the learner,
whose new model versions are hot-swapped into the decision path without a restart.

HTTP: POST /openrtb2/bid (OpenRTB 2.6; 200 BidResponse, 204 no bid, 400 naming the field),
GET /metrics (Prometheus, gaelp_* names), GET /healthz, POST /admin/rollback and
POST /admin/budget (need Authorization: Bearer $GAELP_ADMIN_TOKEN).

Each address can also be set by environment: GAELP_KAFKA, GAELP_REDIS, GAELP_HTTP_PORT,
GAELP_HTTP_HOST. Use --shadow to decide and log on live traffic without ever bidding.

Identity links feed an identity graph in the same Redis (key prefix [identity] key_prefix).
A warehouse sink (consumer group <group_id>-warehouse) writes decisions, events, attributions
and experience to a DuckDB file (--warehouse-path; DuckDB lets one process open it for
writing, so query a copy or stop the service) or to BigQuery ([warehouse] backend =
"bigquery", bigquery_project / bigquery_dataset; credentials from the environment).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kafka", default=None, metavar="HOST:PORT", help="Kafka bootstrap servers (env GAELP_KAFKA)")
    p.add_argument("--redis", default=None, metavar="URL", help="redis://HOST:PORT/DB (env GAELP_REDIS)")
    p.add_argument("--http-port", type=int, default=None, metavar="P",
                   help="port of the bid endpoint and /metrics (env GAELP_HTTP_PORT; 0 = any free port)")
    p.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    p.add_argument("--model-dir", default=None, help="directory of versioned model files")
    p.add_argument("--shadow", action="store_true", help="decide and log only, never bid")
    p.add_argument("--no-learner", action="store_true", help="do not train in this process")
    p.add_argument("--creatives", type=int, default=12, help="creative variants to choose from (default 12)")
    p.add_argument("--warehouse", choices=("duckdb", "bigquery", "off"), default=None,
                   help="where the warehouse sink writes (default duckdb; [warehouse] in the config)")
    p.add_argument("--warehouse-path", default=None, metavar="FILE",
                   help="DuckDB file of the warehouse (env GAELP_WAREHOUSE_DUCKDB; default: beside --model-dir)")


def run(args: argparse.Namespace) -> int:
    from agent_service.config import load_config
    from agent_service.runtime import event_loop
    from agent_service.runtime.serve import serve_forever

    cfg = load_config(args.config)
    changes = {k: v for k, v in (("kafka", args.kafka), ("redis", args.redis), ("http_port", args.http_port),
                                 ("model_dir", args.model_dir)) if v is not None}
    if args.shadow:
        changes["shadow"] = True
    if changes:
        cfg = cfg.replace("serve", **changes)
    warehouse = {k: v for k, v in (("backend", args.warehouse), ("duckdb_path", args.warehouse_path)) if v is not None}
    if warehouse:
        cfg = cfg.replace("warehouse", **warehouse)
    event_loop.run(serve_forever(cfg, creatives=args.creatives, learner=not args.no_learner), cfg.serve.event_loop)
    return 0
