"""The ``gaelp`` command.

Each subcommand lives in ``agent_service/commands/<name>.py`` and exposes ``HELP`` (one line),
``DESCRIPTION`` (the --help text), ``add_arguments(parser)`` and ``run(args) -> int``. Heavy
imports (torch, faust, ray) happen inside ``run`` so that ``gaelp --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from agent_service.threads import limit_math_threads

limit_math_threads()  # before any command loads numpy or torch (see agent_service/threads.py)

from agent_service.errors import ConfigError, DecodeError, GaelpError  # noqa: E402

__all__ = ["main"]

# Order is the order shown in --help.
COMMANDS: tuple[str, ...] = (
    "simulate",
    "serve",
    "learner",
    "admin",
    "feed",
    "warehouse",
    "train",
    "evaluate",
    "ope",
    "experiments",
    "promote",
    "bench",
    "attribute",
    "ingest",
    "discover",
    "users",
)

_EPILOG = """\
typical use:
  gaelp simulate --days 1 --seed 0 --out runs/demo     a simulated campaign end to end, no services
  gaelp serve --kafka 127.0.0.1:9092 --redis redis://127.0.0.1:6379/0 --http-port 8080
  gaelp bench ipinyou --data ../shared/data/ipinyou-2997 --c0 0.03125 --policy lin
  gaelp attribute --paths paths.csv --model markov
  gaelp ope --log warehouse.duckdb --candidate 7 --known-versions 5,6,7
  gaelp experiments --config gaelp.toml --warehouse warehouse.duckdb
  gaelp ingest ga4 ../shared/reference/ga4 --warehouse runs/ga4.duckdb
  gaelp discover --warehouse runs/ga4.duckdb --out runs/discovered.toml   learn a calibration from GA4 data
  gaelp users snapshot --warehouse runs/users.duckdb    (then `gaelp users restore` into a new store)

Every command takes --config FILE (TOML, sections as in agent_service/config.py);
`gaelp COMMAND --help` explains each one.
"""


def _build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="gaelp",
        description="GAELP: an online-learning agent for performance advertising. It decides the bid, "
        "creative, channel and target segment for every ad opportunity and learns from "
        "impressions, clicks and conversions that arrive days later.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, object] = {}
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"agent_service.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"agent_service.commands.{name}":
                continue  # a command not built yet is simply not offered
            raise
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        modules[name] = mod
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gaelp`` console script."""
    parser, modules = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(modules[args.command].run(args) or 0)  # type: ignore[attr-defined]
    except (ConfigError, DecodeError) as exc:
        print(f"gaelp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except GaelpError as exc:
        print(f"gaelp {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
