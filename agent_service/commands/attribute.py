"""``gaelp attribute``: credit per channel over a table of paths."""

from __future__ import annotations

import argparse

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

HELP = "credit conversions and value to channels over a path table (Markov, Shapley, heuristics)"

DESCRIPTION = """\
Credit the conversions (and conversion value) of a table of journeys to channels.

The CSV has the channelattribution layout, one row per path:
  path,total_conversions,total_conversion_value,total_null
  "search > social > search",12,960.0,140

Models: last, first, linear, time_decay (half-life, 7 days by default; the CSV has no
timestamps, so touches are taken --step-days apart), position (40/20/40 by default),
markov (removal effect of an order-k chain, solved exactly) and shapley (Shapley values of
each converting journey's channels; exact up to 12 channels, sampled above).

Output: a table per channel, and as the last stdout line one JSON object
  {"paths": N, "model": ..., "total_conversions": ..., "total_value": ...,
   "credit": {"<channel>": {"conversions": x, "value": y}, ...}}
Bad input (missing column, empty path or step, negative or non-numeric count, malformed
CSV) is reported with its row and column, exit status 2.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``gaelp attribute``."""
    parser.add_argument("--paths", required=True, metavar="FILE.csv", help="path table (see above)")
    parser.add_argument("--model", default="markov",
                        help="last|first|linear|time_decay|position|markov|shapley (default: markov)")
    parser.add_argument("--sep", default=">", help="step separator inside a path (default: '>')")
    parser.add_argument("--half-life-days", type=float, default=None, help="time decay half-life (default 7)")
    parser.add_argument("--step-days", type=float, default=None,
                        help="time decay: days between consecutive touches of a path (default 1)")
    parser.add_argument("--position-first", type=float, default=None, help="position: first-touch share (0.4)")
    parser.add_argument("--position-last", type=float, default=None, help="position: last-touch share (0.4)")
    parser.add_argument("--order", type=int, default=None, help="markov: chain order (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="shapley: seed of the sampling (default 0)")


def run(args: argparse.Namespace) -> int:
    """Read the paths, attribute, print the table and the JSON line."""
    import json
    import time

    from agent_service.attribution import AttributionConfig, attribute_paths, read_paths_csv

    overrides = {
        "half_life_days": args.half_life_days,
        "step_days": args.step_days,
        "position_first": args.position_first,
        "position_last": args.position_last,
        "markov_order": args.order,
        "seed": args.seed,
    }
    config = AttributionConfig(model=args.model, **{k: v for k, v in overrides.items() if v is not None})
    t0 = time.perf_counter()
    table = read_paths_csv(args.paths, sep=args.sep)
    result = attribute_paths(table, config=config)
    elapsed = time.perf_counter() - t0
    width = max([len("channel")] + [len(c) for c in result.channels])
    print(f"{'channel':<{width}}  {'conversions':>14}  {'value':>16}")
    for name, conv, value in zip(result.channels, result.conversions, result.values, strict=True):
        print(f"{name:<{width}}  {conv:>14.4f}  {value:>16.4f}")
    print(f"{table.n_paths} paths, model {result.model}, {elapsed:.3f} s")
    print(json.dumps(result.to_json_obj(paths=table.n_paths), sort_keys=False))
    return 0
