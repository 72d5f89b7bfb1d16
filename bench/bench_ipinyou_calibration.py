"""Synthetic check of the iPinYou agent's online pCTR recalibration (no test-log line is read).

Replays 156 synthetic episodes of campaign 2997's training market (prices from ``info.json``'s
histogram, lognormal pCTRs around the training CTR) at c0 = 1/32 through the same offline-trained
agent with ``calibrate`` off (the baseline) and on, for three true relations of CTR to pCTR:
truthful, over-confident (slope 0.7) and under-confident (slope 1.3), each with the same mean.
Reports the expected clicks won (the true CTRs of won auctions: far less noise than sampled
clicks), the realised clicks and the fitted slope. This is the evidence the design was chosen on,
before the real log was run (commit 5116e2a).

    .venv/bin/python bench/bench_ipinyou_calibration.py [--episodes 156] [--seed 0]

Prints one line per case, then one JSON object as the last line.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_service.lab.ipinyou.bidder import GaelpBidder, train_offline
from agent_service.lab.ipinyou.config import AgentConfig
from agent_service.lab.ipinyou.synthetic import Plan
from simulators.ipinyou.config import default_data_dir
from simulators.ipinyou.data import AuctionLog, load_info
from simulators.ipinyou.replay import Observation, Outcome, replay
from simulators.ipinyou.rlb import value_function


class _Meter:
    """Wraps a bidder; sums the true CTR of the auctions it wins."""

    def __init__(self, inner: GaelpBidder, slope: float, offset: float) -> None:
        self.inner, self.slope, self.offset, self.expected = inner, slope, offset, 0.0

    def bid(self, obs: Observation) -> int:
        return self.inner.bid(obs)

    def observe(self, outcome: Outcome) -> None:
        if outcome.won:
            self.expected += float(_truth(np.array([outcome.pctr]), self.slope, self.offset)[0])
        self.inner.observe(outcome)


def _truth(pctr: np.ndarray, slope: float, offset: float) -> np.ndarray:
    return 1 / (1 + np.exp(-(slope * np.log(pctr / (1 - pctr)) + offset)))


def _offset_for_mean(pctr: np.ndarray, slope: float) -> float:
    """The offset that keeps the mean true CTR equal to the mean pCTR (bisection)."""
    lo, hi = -10.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if _truth(pctr, slope, mid).mean() > pctr.mean() else (mid, hi)
    return lo


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=156)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    info = load_info(default_data_dir())
    budget = int(info.cost_train / info.imp_train / 32 * 1000)
    plan = Plan(value_function(info.price_pmf(1.0), 1000, budget, info.ctr), info.ctr, budget, 300)
    base = AgentConfig()
    t0 = time.perf_counter()
    trained = train_offline(info, plan, base, args.seed)
    offline_s = time.perf_counter() - t0
    n = 1000 * args.episodes
    prices = np.asarray(info.price_counter_train, dtype=np.float64)
    prices /= prices.sum()
    cases: dict[str, Any] = {}
    for slope in (1.0, 0.7, 1.3):
        rng = np.random.default_rng(args.seed + 7)
        pctr = np.clip(info.ctr * np.exp(0.8 * rng.standard_normal(n) - 0.32), 1e-6, 0.5)
        offset = _offset_for_mean(pctr, slope)
        click = (rng.random(n) < _truth(pctr, slope, offset)).astype(np.int64)
        price = np.minimum(rng.choice(len(prices), size=n, p=prices), 300).astype(np.int64)
        log = AuctionLog(click, price, pctr)
        row: dict[str, Any] = {}
        for name, on in (("off", False), ("on", True)):
            bidder = GaelpBidder(plan, info, copy.deepcopy(trained), dataclasses.replace(base, calibrate=on), args.seed)
            meter = _Meter(bidder, slope, offset)
            res = replay(log, budget, meter)
            row[name] = {"expected_clicks": round(meter.expected, 2), "clicks": res.clicks,
                         "fitted_slope": round(bidder.calib.a, 3) if on else None}
        row["gain_pct"] = round(100 * (row["on"]["expected_clicks"] / row["off"]["expected_clicks"] - 1), 2)
        cases[f"slope_{slope:g}"] = row
        print(f"true slope {slope:g}: expected clicks off {row['off']['expected_clicks']} -> on "
              f"{row['on']['expected_clicks']} ({row['gain_pct']:+.2f} %), fitted slope {row['on']['fitted_slope']}",
              flush=True)
    print(json.dumps({"bench": "ipinyou_calibration", "episodes": args.episodes, "c0": 1 / 32,
                      "offline_seconds": round(offline_s, 1), "cases": cases}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
