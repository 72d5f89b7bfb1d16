"""``gaelp learner``: the learner role of ``gaelp serve`` as a process of its own."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train the agent from the experience topic on a Ray actor and publish versioned weights"
DESCRIPTION = """\
Run the learner alone (the same as `gaelp serve --roles learner`): a consumer of the
experience topic (group <serve.group_id>-learner) feeds the learner — a Ray actor, in a local
Ray by default or on a cluster with --ray-address / GAELP_RAY_ADDRESS — in batches; each new
version is published to the model registry, where every bidder picks it up by version.

The learner is checkpointed every [learner] checkpoint_every_s seconds or
checkpoint_every_records records, and the topic's offsets are committed only after a checkpoint
covers them: if the actor dies, Ray restarts it from its checkpoint, the uncommitted experience
is read again, and nothing is lost or counted twice; bidders keep serving the last version
meanwhile. With a cluster, use the Redis registry (--registry redis): the actor may restart on
another node, and its checkpoint then lives in Redis too.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kafka", default=None, metavar="HOST:PORT", help="Kafka bootstrap servers (env GAELP_KAFKA)")
    p.add_argument("--redis", default=None, metavar="URL", help="redis://HOST:PORT/DB (env GAELP_REDIS)")
    p.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    p.add_argument("--ray-address", default=None, metavar="ADDR", help="Ray cluster (env GAELP_RAY_ADDRESS; default: local Ray)")
    p.add_argument("--registry", choices=("file", "redis"), default=None, help="model registry ([serve] registry)")
    p.add_argument("--model-dir", default=None, help="directory of the file registry and the checkpoint")
    p.add_argument("--http-port", type=int, default=None, metavar="P", help="port of /metrics (0 = any free port)")
    p.add_argument("--creatives", type=int, default=None,
                   help="creative slots (must match the bidders; default [creatives] capacity, 64)")


def run(args: argparse.Namespace) -> int:
    from agent_service.commands import serve

    args.roles, args.shadow, args.no_learner, args.warehouse, args.warehouse_path = "learner", False, False, None, None
    return serve.run(args)
