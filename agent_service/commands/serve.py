"""``gaelp serve``: the streaming service on Kafka + Redis — every role, or the ones asked for."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent_service.commands.flags import add_flags, config_from_args

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
  candidate  with --candidate-version V: decides a sample (--candidate-sample: whole partitions) of the
           decision log again with version V and logs those decisions (never sent) for
           `gaelp ope`; the bidders never run V. Idle without --candidate-version.

Every process serves GET /metrics (Prometheus, gaelp_* names) and GET /healthz. The model
registry is a directory (--registry file, one host or a shared volume) or Redis (--registry
redis: every bidder on every host serves a new version within a second of its publish).

Addresses can also come from the environment: GAELP_KAFKA, GAELP_REDIS, GAELP_HTTP_PORT,
GAELP_HTTP_HOST, GAELP_REGISTRY_REDIS, GAELP_RAY_ADDRESS, GAELP_CANDIDATE_VERSION. GAELP_ID_SALT (pseudonymising ids) is
required by the bidder, stream and sink roles. Use --shadow to decide and log on live traffic
without ever bidding.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flags(p, "serve", ["kafka", "redis", "http_port", "model_dir", "registry", "shadow", "candidate_version",
                           "candidate_sample", "canary_share", "bid_rule"], rename={"canary_share": "canary"})
    add_flags(p, "learner", ["ray_address"])
    add_flags(p, "warehouse", ["backend", "duckdb_path"], rename={"backend": "warehouse", "duckdb_path": "warehouse-path"})
    p.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    p.add_argument("--roles", default="bidder,stream,learner,sink,candidate", metavar="LIST",
                   help="comma-separated roles this process runs (default: all five)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="bidder processes sharing the HTTP port (SO_REUSEPORT) and one budget in Redis; worker k "
                        "also serves /metrics on HTTP port + 1 + k (default 1)")
    p.add_argument("--no-learner", action="store_true", help="drop the learner role (same as leaving it out of --roles)")
    p.add_argument("--creatives", type=int, default=None,
                   help="creative slots of the policy (default [creatives] capacity, 64; the catalogue fills them)")


def run(args: argparse.Namespace) -> int:
    from agent_service.errors import ConfigError
    from agent_service.runtime import event_loop
    from agent_service.runtime.serve import ROLES, serve_forever

    cfg = config_from_args(args)
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
