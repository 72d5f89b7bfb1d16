"""``gaelp serve``: the streaming service on Kafka + Redis — every role, or the ones asked for."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run the service on Kafka + Redis: bid endpoint, stream workers, learner, warehouse sink"
DESCRIPTION = """\
Run GAELP as a service. By default one process runs every role; each can run alone, so a
deployment scales the parts it needs (docker-compose.yml runs them as separate services):

  bidder   POST /openrtb2/bid (OpenRTB 2.6; 200 BidResponse, 204 no bid, 400 naming the field):
           decides from Redis state with the newest model version (swapped in without a
           restart, verified against its checksum), reserves budget atomically in Redis (every
           bidder shares one budget), logs each decision to Kafka. Never trains, never writes
           the warehouse. Admin: POST /admin/rollback, POST /admin/budget (need
           Authorization: Bearer $GAELP_ADMIN_TOKEN).
  stream   the Faust topology: auction results, ad events, identity links (into a Redis identity
           graph), conversions (14-day event-time join, attribution) and bid requests from
           Kafka; Kafka spreads the partitions over the stream workers of one group.
  learner  the experience topic into the learner — a Ray actor (local Ray by default,
           --ray-address for a cluster; [learner] backend = "thread" for no Ray) — which
           publishes versioned weights to the model registry; checkpointed, offsets committed
           after each checkpoint. Run one.
  sink     the warehouse sink: decisions, events, attributions, experience to a DuckDB file
           (--warehouse-path) or BigQuery ([warehouse] backend = "bigquery").

Every process serves GET /metrics (Prometheus, gaelp_* names) and GET /healthz. The model
registry is a directory (--registry file, one host or a shared volume) or Redis (--registry
redis: every bidder on every host serves a new version within a second of its publish).

Addresses can also come from the environment: GAELP_KAFKA, GAELP_REDIS, GAELP_HTTP_PORT,
GAELP_HTTP_HOST, GAELP_REGISTRY_REDIS, GAELP_RAY_ADDRESS. GAELP_ID_SALT (pseudonymising ids) is
required by the bidder, stream and sink roles. Use --shadow to decide and log on live traffic
without ever bidding.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kafka", default=None, metavar="HOST:PORT", help="Kafka bootstrap servers (env GAELP_KAFKA)")
    p.add_argument("--redis", default=None, metavar="URL", help="redis://HOST:PORT/DB (env GAELP_REDIS)")
    p.add_argument("--http-port", type=int, default=None, metavar="P",
                   help="port of the bid endpoint and /metrics (env GAELP_HTTP_PORT; 0 = any free port)")
    p.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    p.add_argument("--roles", default="bidder,stream,learner,sink", metavar="LIST",
                   help="comma-separated roles this process runs (default: all four)")
    p.add_argument("--model-dir", default=None, help="directory of the file registry and the learner's checkpoint")
    p.add_argument("--registry", choices=("file", "redis"), default=None,
                   help="model registry: files in --model-dir, or Redis ([serve] registry)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster of the learner role (env GAELP_RAY_ADDRESS; default: a local Ray)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="bidder processes sharing the HTTP port (SO_REUSEPORT) and one budget in Redis; worker k "
                        "also serves /metrics on HTTP port + 1 + k (default 1)")
    p.add_argument("--shadow", action="store_true",
                   help="decide and log only, never bid; isolated from the live service (own Redis keys, consumer "
                        "group and <topic>.shadow outputs; no budget, no learner, no sink: runtime/shadow.py)")
    p.add_argument("--no-learner", action="store_true", help="drop the learner role (same as leaving it out of --roles)")
    p.add_argument("--creatives", type=int, default=None,
                   help="creative slots of the policy (default [creatives] capacity, 64; the catalogue fills them)")
    p.add_argument("--warehouse", choices=("duckdb", "bigquery", "off"), default=None,
                   help="where the warehouse sink writes (default duckdb; [warehouse] in the config; off drops the sink)")
    p.add_argument("--warehouse-path", default=None, metavar="FILE",
                   help="DuckDB file of the warehouse (env GAELP_WAREHOUSE_DUCKDB; default: beside --model-dir)")


def run(args: argparse.Namespace) -> int:
    from agent_service.config import load_config
    from agent_service.errors import ConfigError
    from agent_service.runtime import event_loop
    from agent_service.runtime.serve import ROLES, serve_forever

    cfg = load_config(args.config)
    changes = {k: v for k, v in (("kafka", args.kafka), ("redis", args.redis), ("http_port", args.http_port),
                                 ("model_dir", args.model_dir), ("registry", args.registry)) if v is not None}
    if args.shadow:
        changes["shadow"] = True
    if changes:
        cfg = cfg.replace("serve", **changes)
    if args.ray_address is not None:
        cfg = cfg.replace("learner", ray_address=args.ray_address)
    warehouse = {k: v for k, v in (("backend", args.warehouse), ("duckdb_path", args.warehouse_path)) if v is not None}
    if warehouse:
        cfg = cfg.replace("warehouse", **warehouse)
    roles = {r.strip() for r in args.roles.split(",") if r.strip()}
    if not roles <= set(ROLES) or not roles:
        raise ConfigError("--roles", f"expected a comma-separated subset of {','.join(ROLES)}, got {args.roles!r}")
    if args.no_learner:
        roles.discard("learner")
    if cfg.warehouse.backend == "off":
        roles.discard("sink")
    if not roles:
        raise ConfigError("--roles", "nothing left to run")
    if args.creatives is None:
        args.creatives = cfg.creatives.capacity
    workers = getattr(args, "workers", 1)
    if workers < 1:
        raise ConfigError("--workers", "must be >= 1")
    if workers == 1:
        event_loop.run(serve_forever(cfg, creatives=args.creatives, roles=roles), cfg.serve.event_loop)
        return 0
    if "bidder" not in roles:
        raise ConfigError("--workers", "more than one worker needs the bidder role")
    from agent_service.runtime.workers import run_workers

    return run_workers(cfg, args.creatives, roles, workers)
