"""``gaelp promote``: canary a candidate model version on live traffic, then promote or roll it back."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from agent_service.commands.flags import add_flags

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "parse_share", "run"]

HELP = "canary a candidate model version on a hashed share of persons; promote or roll back automatically"
DESCRIPTION = """\
Start a canary: every bidder of `gaelp serve` (same Redis) routes a stable hashed share of
persons (identity-resolved: a person's devices stay together) to the candidate registry version
within about a second, without a restart. Bidders and stream workers tally, per arm and person,
requests, no-bids, errors, spend and credited conversion value in Redis (exactly once under
redelivery), and each arm's sums over its persons as they go. Every --every seconds ([canary]
evaluate_every_s) the controller reads those sums (a constant-size read at any number of persons) and
runs the always-valid test on conversion value per dollar and the guardrails (spend rate, no-bid
rate, error rate) of [canary]:

  promote (whole interval of the lift above 0)   next ramp stage, or after the last one the
                                                 registry's live version becomes the candidate's
                                                 weights (republished as the newest version)
  roll back (surely worse, or a guardrail broke) share 0: every bidder is back on control
  hold (horizon passed without a decision)       share frozen until --abort

Every step is one structured log line (`canary {json}`) and the gaelp_canary_* metrics
(--metrics-port serves them). State lives in Redis only, so `--once` (one step, for cron)
continues the same canary. Exit status: 0 promoted (or --once/--status/--abort done), 3 rolled
back, 4 held.

  gaelp promote --candidate 12 --canary 5% --config gaelp.toml --redis redis://127.0.0.1:6379/0
  gaelp promote --status
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flags(p, "serve", ["redis", "registry", "model_dir"])
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="TOML configuration ([canary], [canary.test], [canary.guardrails], [serve])")
    p.add_argument("--candidate", type=int, default=None, metavar="VERSION", help="registry version to canary")
    p.add_argument("--canary", type=parse_share, default=None, metavar="SHARE",
                   help="first share of persons on the candidate, e.g. 5%% or 0.05 (default [canary] share)")
    p.add_argument("--experiment", default=None, metavar="ID",
                   help="experiment id salting who sees the candidate (default v<candidate>-<start ms>)")
    p.add_argument("--once", action="store_true", help="start if needed, evaluate once, print the plan and exit")
    p.add_argument("--every", type=float, default=None, metavar="S", help="seconds between evaluations "
                   "(default [canary] evaluate_every_s)")
    p.add_argument("--restart", action="store_true",
                   help="start again although the last canary of this candidate has ended")
    p.add_argument("--status", action="store_true", help="print the plan and each arm's totals, change nothing")
    p.add_argument("--abort", action="store_true", help="end the running or held canary now (share 0)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT", help="serve GET /metrics while running")


def parse_share(text: str) -> float:
    """``5%`` or ``0.05`` → 0.05; anything else is refused naming the flag."""
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--canary: expected a share like 5% or 0.05, got {text!r}") from exc
    if not (math.isfinite(share) and 0 < share <= 1):
        raise argparse.ArgumentTypeError(f"--canary: must be in (0, 100%], got {text!r}")
    return share


def _load(path: Path | None) -> tuple[Any, Any]:
    """(GaelpConfig, its [canary] settings) of a TOML file."""
    from agent_service.config import GaelpConfig
    from agent_service.typed_mapping import from_mapping, read_toml

    cfg = from_mapping(GaelpConfig, {} if path is None else read_toml(path, "--config"))
    return cfg, cfg.canary


def run(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses
    import time

    from agent_service.adapters.redis_canary import RedisCanaryStore
    from agent_service.commands.flags import apply_flags
    from agent_service.metrics import Metrics
    from agent_service.runtime.canary_controller import CanaryController
    from agent_service.runtime.learner_service import model_registry

    cfg, canary_cfg = _load(args.config)
    cfg = apply_flags(cfg, args)
    if args.canary is not None:
        canary_cfg = dataclasses.replace(canary_cfg, share=args.canary)

    async def main() -> int:
        metrics = Metrics()
        runner = None
        if args.metrics_port is not None:
            from aiohttp import web

            from agent_service.http.app import build_metrics_app

            runner = web.AppRunner(build_metrics_app(metrics, lambda: {"role": "promote"}), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, cfg.serve.http_host, args.metrics_port).start()
        try:
            async with RedisCanaryStore(cfg.serve.redis, prefix=f"{cfg.serve.key_prefix}canary:") as store:
                ctl = CanaryController(store, model_registry(cfg), canary_cfg, lambda: int(time.time() * 1000),
                                       metrics)
                return await _drive(ctl, args)
        finally:
            if runner is not None:
                await runner.cleanup()

    return asyncio.run(main())


async def _drive(ctl: Any, args: argparse.Namespace) -> int:
    from agent_service.errors import ConfigError

    if args.status:
        _print(await ctl.status())
        return 0
    if args.abort:
        await ctl.abort()
        _print(await ctl.status())
        return 0
    plan = await ctl.store.plan()
    running = plan is not None and plan.state in ("running", "held")
    if running and args.candidate is not None and plan.candidate_version != args.candidate:
        raise ConfigError("--candidate", f"canary {plan.experiment_id} of v{plan.candidate_version} is "
                          f"{plan.state}; --abort it first")
    if not running:
        if args.candidate is None:
            raise ConfigError("--candidate", "no canary is running: name the version to start one")
        if plan is None or plan.candidate_version != args.candidate or args.restart:
            await ctl.start(args.candidate, args.experiment)
        elif not args.once:
            raise ConfigError("--candidate", f"the canary of v{args.candidate} already ended ({plan.state}); "
                              "pass --restart to run it again")
    if args.once:
        await ctl.step()
        _print(await ctl.status())
        return 0
    end = await ctl.run(every_s=args.every)
    _print(await ctl.status())
    return {"promoted": 0, "rolled_back": 3, "held": 4}.get(end.state if end is not None else "", 0)


def _print(status: dict[str, Any]) -> None:
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return x
    print(json.dumps(clean(status), sort_keys=True), flush=True)
