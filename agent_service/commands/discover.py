"""``gaelp discover``: learn the simulated world's calibration from ingested GA4 data."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

HELP = "learn a simulator calibration from GA4 data ingested with `gaelp ingest ga4`"
DESCRIPTION = """\
Read the GA4 tables of a warehouse (written by `gaelp ingest ga4 ... --warehouse FILE`) and learn
the simulated world from them: behaviour segments (a mixture over each person's page contexts and
hours, K chosen by BIC) with their shares, hours and conversion values; the hour x weekday traffic
profile; the click-to-conversion delay (Kaplan-Meier hazard with right-censoring, chance pairs of
clicks and conversions subtracted); devices per person and logins; journey lengths; channel mix and CTR/CVR by
channel and device. Writes --out in the calibration format `gaelp simulate --calibration` and
`gaelp train --calibration` load; numbers GA4 cannot identify (journey dynamics, auctions,
creatives) come from --prior (default simulators/calibration/default.toml). Each method and its
check is documented in agent_service/discovery/<step>.py.

example:
  gaelp ingest ga4 runs/ga4 --warehouse runs/ga4.duckdb
  gaelp discover --warehouse runs/ga4.duckdb --out runs/discovered.toml --report runs/discovered.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warehouse", required=True, type=Path, metavar="FILE", help="DuckDB file with the GA4 tables")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="calibration TOML to write")
    p.add_argument("--report", type=Path, default=None, metavar="FILE", help="also write every finding as JSON")
    p.add_argument("--prior", type=Path, default=None, metavar="FILE",
                   help="calibration whose unidentified numbers are kept (default: the default calibration)")
    p.add_argument("--max-segments", type=int, default=6, help="largest K tried (default 6; K is chosen by BIC)")
    p.add_argument("--max-delay-days", type=float, default=45.0, help="longest delay considered (default 45)")
    p.add_argument("--seed", type=int, default=0, help="seed of the mixture's restarts (default 0)")
    p.add_argument("--name", default="discovered", help="meta.name of the calibration (default discovered)")


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from agent_service.discovery import discover, report_of
    from agent_service.errors import ConfigError
    from simulators.calibration import dump_calibration, load_calibration

    if args.max_segments < 1:
        raise ConfigError("--max-segments", "must be >= 1")
    started = time.perf_counter()
    findings, cal = discover(args.warehouse, load_calibration(args.prior), k_max=args.max_segments, seed=args.seed,
                             max_delay_days=args.max_delay_days, name=args.name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dump_calibration(cal))
    load_calibration(args.out)  # what was written must load
    report = report_of(findings)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=1))
    s, d, c = report["segments"], report["delay"], report["channels"]
    print(f"segments: K={s['k']} (BIC), shares " + ", ".join(f"{x:.3f}" for x in s["share"])
          + ", values USD " + ", ".join("-" if v is None else f"{v:.2f}" for v in s["value_usd"]))
    q = d["quantiles_days"]
    if d["written"] == "fitted":
        print(f"delay: p10 {q['p10']:.2f} d, median {q['p50']:.2f} d, p90 {q['p90']:.2f} d "
              f"(naive last click median {d['naive_last_click_days']['p50']:.2f} d), {d['conversions']} conversions")
    else:
        print(f"delay: not fitted, the prior's kept: {d['written']}; {d['conversions']} conversions")
    print("CTR by channel: " + ", ".join(f"{n} {v:.4f}" for n, v in zip(c["names"], c["ctr"], strict=True)
                                        if v is not None))
    print(f"wrote {args.out}" + (f" and {args.report}" if args.report else "")
          + f" in {time.perf_counter() - started:.1f} s")
    print(json.dumps({"k": s["k"], "shares": s["share"], "delay_days": q, "ctr": c["ctr"], "out": str(args.out)}))
    return 0
