"""``gaelp bench``: benchmarks, one sub-subcommand each (figures in ``bench/README.md``).

To add a bench, write ``_add_NAME(sub)`` that registers its sub-parser with
``set_defaults(bench_run=<function(args) -> int>)`` and list it in ``_BENCHES``. Every bench
prints a small human-readable table and, as its last stdout line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

HELP = "run a benchmark and print its numbers (last line: one JSON object)"

DESCRIPTION = """\
Run one of GAELP's benchmarks (figures in bench/README.md). Each prints a table, then one JSON object as
its last stdout line.

benches:
  ipinyou   the iPinYou real-time-bidding replay (campaign 2997): const, linear bidding,
            RLB (Cai et al. 2017) or GAELP's learned bidder under budget ratio c0

examples:
  gaelp bench ipinyou --policy rlb --c0 0.03125
  gaelp bench ipinyou --policy agent --seed 0 --all-c0
  gaelp bench ipinyou --policy lin-oracle     # b0 tuned on the test log: an upper bound only
"""

_IPINYOU_DESCRIPTION = """\
Replay campaign 2997 of iPinYou with the protocol of Cai et al. (WSDM 2017): episodes of N=1000
auctions (the last, partial one counts), per-episode budget B = int(CPM_train x c0 x N), integer
bids capped at 300 and at the budget left, a bid wins when >= the market price and pays it.

policies:
  const       fixed bid (--bid, default: tuned on synthetic episodes from info.json)
  lin         linear bidding, b0 tuned on synthetic episodes from info.json only
  lin-oracle  linear bidding, b0 tuned on the TEST log's clicks: an upper bound, not a result
  rlb         RLB's dynamic program from info.json (published: 78 clicks at c0=1/32)
  agent       GAELP: RLB's plan x a learned bid multiplier (synthetic training + online refits
              from past auctions only); trained agents are cached under --cache

--config FILE reads the [ipinyou] table of a TOML file (keys: data_dir, episode_length, c0,
max_bid, feedback); flags given on the command line win.
"""


def _add_ipinyou(sub: Any) -> None:
    p = sub.add_parser("ipinyou", help="the iPinYou RTB replay (campaign 2997)",
                       description=_IPINYOU_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", metavar="DIR", default=None,
                   help="folder with test.theta.txt and info.json (default: ../shared/data/ipinyou-2997)")
    p.add_argument("--c0", type=float, default=None, help="budget ratio (default 0.03125 = 1/32)")
    p.add_argument("--all-c0", action="store_true", help="run c0 = 1/32, 1/16, 1/8, 1/4, 1/2")
    p.add_argument("--policy", default="rlb", choices=("const", "lin", "lin-oracle", "rlb", "agent"))
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--bid", type=int, default=None, help="the constant bid of --policy const")
    p.add_argument("--feedback", choices=("full", "won"), default=None,
                   help="what the agent learns after an auction: won (click and price of won auctions "
                        "only, as a real bidder; the default) or full (of every auction: a reference only)")
    p.add_argument("--cache", metavar="DIR", default="runs/ipinyou",
                   help="where trained agents are cached (default runs/ipinyou)")
    p.add_argument("--retrain", action="store_true", help="train the agent from scratch, ignoring the cache")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the agent cache")
    p.add_argument("--config", metavar="FILE", default=None, help="TOML file with an [ipinyou] table")
    p.set_defaults(bench_run=_run_ipinyou)


_BENCHES: tuple[Callable[[Any], None], ...] = (_add_ipinyou,)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the benches as sub-subcommands."""
    sub = parser.add_subparsers(dest="bench", metavar="BENCH")
    for add in _BENCHES:
        add(sub)


def run(args: argparse.Namespace) -> int:
    """Run the chosen bench."""
    if getattr(args, "bench", None) is None:
        print("gaelp bench: choose a bench, e.g. `gaelp bench ipinyou --policy rlb`", file=sys.stderr)
        return 2
    return int(args.bench_run(args))


def _ipinyou_config(args: argparse.Namespace) -> Any:

    from agent_service.typed_mapping import from_mapping, read_toml
    from simulators.ipinyou.config import IPinYouConfig

    section: dict[str, Any] = read_toml(args.config, "--config").get("ipinyou", {}) if args.config else {}
    for key, value in (("data_dir", args.data), ("c0", args.c0), ("feedback", args.feedback)):
        if value is not None:
            section[key] = value
    return from_mapping(IPinYouConfig, section, "ipinyou")


def _run_ipinyou(args: argparse.Namespace) -> int:
    from agent_service.lab.ipinyou.runner import TableCache, format_table, record_test_run, run_policy
    from simulators.ipinyou.config import C0_VALUES, PUBLISHED_2997
    from simulators.ipinyou.data import load_info, load_log

    cfg = _ipinyou_config(args)
    log = load_log(cfg.data_path, max_price=cfg.max_bid)
    info = load_info(cfg.data_path)
    c0s = C0_VALUES if args.all_c0 else (cfg.c0,)
    cache = None if args.no_cache else Path(args.cache)
    rows = []
    tables = TableCache()
    for c0 in c0s:
        rows.append(run_policy(args.policy, log, info, c0, seed=args.seed, episode_length=cfg.episode_length,
                               max_bid=cfg.max_bid, feedback=cfg.feedback, const_bid=args.bid,
                               cache_dir=cache, retrain=args.retrain, tables=tables))
        tables.drop()
    print(format_table(rows))
    ref = {"lin-oracle": "lin"}.get(args.policy, args.policy)
    if ref in PUBLISHED_2997 and abs(c0s[0] - 1 / 32) < 1e-12:
        pub = PUBLISHED_2997[ref]
        print(f"published {ref.upper()} at c0=1/32 on 2997: {pub['clicks']} clicks / {pub['cost']} cost")
    for r in rows:
        r.pop("episode_clicks", None)
    config = {"bench": "gaelp bench ipinyou", "policy": args.policy, "c0": list(c0s), "seed": args.seed,
              "feedback": cfg.feedback, "episode_length": cfg.episode_length, "max_bid": cfg.max_bid,
              "bid": args.bid, "retrain": args.retrain, "no_cache": args.no_cache}
    root = Path(__file__).resolve().parents[2]
    entry = record_test_run(cfg.data_path, root, config,
                            {"clicks": {args.policy: {f"{r['c0']:g}": r["clicks"] for r in rows}}})
    if entry is not None:
        print(f"test log: run appended to the ledger (commit {entry['commit']}, config {entry['config_hash']})",
              file=sys.stderr)
    if len(rows) == 1:
        out: dict[str, Any] = rows[0]
    else:
        out = {"policy": args.policy, **{k: [r[k] for r in rows] for k in ("c0", "clicks", "impressions", "cost")},
               "results": rows}
    print(json.dumps(out, default=float))
    return 0
