"""The competitor landscape from won-only feedback on iPinYou 2997, against the true market prices.

The replay log has the market price of every auction, so the true win-rate curve
w(b) = P(price ≤ b) (ties win, as in the replay) is known. A bidder replays the first half of the
log (time order) with ``feedback="won"``: a won auction reveals its price, a lost one only that the
price was above the bid. From that feedback we estimate w per pCTR-quartile context with

* naive: the empirical distribution of the won prices (what a "mean of won prices" rests on);
* km_pooled: Kaplan–Meier over all contexts (lost auctions right-censored at the bid);
* km_context: Kaplan–Meier per context, shrunk to the pooled hazard (``PriceLandscape``, m=50);

and compare each with the truth on every integer bid 1..300 (``all``) and on the bids the policy
actually used, 1..max bid sent (``bid_range``; above it nothing is identified). Truths:
``learn`` = all prices of the same first-half auctions (the censoring bias alone), ``heldout`` =
the second half (also market drift), ``train`` = the training split's price histogram from
info.json (pooled only). There is no per-auction training log: the test file provides both the
learning feedback (first half) and the held-out truth (second half).

Policies (parameters from info.json only): ``const`` bids the training median price; ``lin`` bids
median · pCTR / CTR_train (capped at 300). The budget is not binding (the bid sent is the policy's).
Errors are mean and max absolute error of w over the grid; per-context figures are averaged over
the four contexts weighted by their auctions. Last stdout line: one JSON object. Every run is
appended to ``bench/ledgers/ipinyou-2997-landscape.jsonl`` with the commit and config hash.

    flock /work/locks/bench.lock .venv/bin/python bench/bench_landscape.py [--data DIR]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent_service.agent.model.landscape import PriceLandscape
from agent_service.lab import ledger
from simulators.ipinyou.config import default_data_dir
from simulators.ipinyou.data import AuctionLog, load_info, load_log
from simulators.ipinyou.replay import Observation, Outcome, replay

MAX_BID = 300
GRID = np.arange(1, MAX_BID + 1, dtype=np.float64)


class LoggingBidder:
    """A fixed policy that records what won-only feedback reveals (pCTR, bid sent, won, price)."""

    def __init__(self, policy: str, median: float, ctr: float, rng: np.random.Generator) -> None:
        self.policy, self.median, self.ctr, self.rng = policy, median, ctr, rng
        self.log: list[tuple[float, int, bool, int | None]] = []
        self._pctr = 0.0

    def bid(self, obs: Observation) -> int:
        self._pctr = obs.pctr
        if self.policy == "const":
            return int(self.median)
        b = self.median * obs.pctr / self.ctr
        if self.policy == "lin_explore":  # log-uniform jitter: censoring no longer a function of pCTR
            b *= float(np.exp(self.rng.uniform(-1.0, 1.0)))
        return int(min(MAX_BID, round(b)))

    def observe(self, out: Outcome) -> None:
        self.log.append((self._pctr, out.bid, out.won, out.market_price if out.won else None))


def truth_curve(prices: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.sort(prices), GRID, side="right") / max(prices.size, 1)


def errors(est: np.ndarray, truth: np.ndarray, hi: int) -> dict[str, float]:
    d = np.abs(est - truth)
    return {"mae_all": round(float(d.mean()), 4), "max_all": round(float(d.max()), 4),
            "mae_bid_range": round(float(d[:hi].mean()), 4), "max_bid_range": round(float(d[:hi].max()), 4)}


def weighted(per: list[dict[str, float]], w: np.ndarray) -> dict[str, float]:
    return {k: round(float(np.dot([p[k] for p in per], w / w.sum())), 4) for k in per[0]}


def evaluate(n_ctx: int, fb: list[tuple[float, int, bool, int | None]], learn: AuctionLog, held: AuctionLog,
             prior: float, hi: int) -> dict[str, Any]:
    """Landscapes over ``n_ctx`` pCTR-quantile contexts from the feedback, against both truths."""
    edges = np.quantile(learn.pctr, np.arange(1, n_ctx) / n_ctx)  # pCTR is known before the auction
    land, unshrunk = PriceLandscape(prior_strength=prior), PriceLandscape(prior_strength=0.0)
    won_prices: list[list[int]] = [[] for _ in range(n_ctx)]
    for pctr, bid, won, price in fb:
        k = int(np.searchsorted(edges, pctr, side="right"))
        land.observe(k, bid, won, price)
        unshrunk.observe(k, bid, won, price)
        if price is not None:
            won_prices[k].append(price)
    naive = [truth_curve(np.asarray(w)) for w in won_prices]
    naive_pooled = truth_curve(np.concatenate([np.asarray(w) for w in won_prices]))
    km_ctx = [land.curve(k).at(GRID) for k in range(n_ctx)]
    km_m0 = [unshrunk.curve(k).at(GRID) for k in range(n_ctx)]
    km_pooled = land.curve(None).at(GRID)
    share = np.array([land.count(k) for k in range(n_ctx)], dtype=np.float64)
    km_mix = np.tensordot(share / share.sum(), np.stack(km_ctx), axes=1)
    out: dict[str, Any] = {}
    for name, log in (("learn", learn), ("heldout", held)):
        ctx = np.searchsorted(edges, log.pctr, side="right")
        t = truth_curve(log.price)
        counts = np.array([np.sum(ctx == k) for k in range(n_ctx)], dtype=np.float64)
        truths = [truth_curve(log.price[ctx == k]) for k in range(n_ctx)]
        out[name] = {
            "pooled": {"naive": errors(naive_pooled, t, hi), "km_pooled": errors(km_pooled, t, hi),
                       "km_context_mixture": errors(km_mix, t, hi)},
            "per_context": {
                "naive": weighted([errors(naive[k], truths[k], hi) for k in range(n_ctx)], counts),
                "km_pooled": weighted([errors(km_pooled, truths[k], hi) for k in range(n_ctx)], counts),
                "km_context": weighted([errors(km_ctx[k], truths[k], hi) for k in range(n_ctx)], counts),
                "km_context_m0": weighted([errors(km_m0[k], truths[k], hi) for k in range(n_ctx)], counts),
            },
        }
    return out


def run_policy(policy: str, learn: AuctionLog, held: AuctionLog, median: float, ctr: float, prior: float,
               contexts: list[int], seed: int) -> dict[str, Any]:
    bidder = LoggingBidder(policy, median, ctr, np.random.default_rng(seed))
    res = replay(learn, MAX_BID * 1000, bidder, feedback="won", max_bid=MAX_BID)
    hi = max(b for _, b, _, _ in bidder.log)
    won = np.array([p for _, _, _, p in bidder.log if p is not None], dtype=np.float64)
    pooled = PriceLandscape(prior_strength=prior)
    for _, bid, w, price in bidder.log:
        pooled.observe(None, bid, w, price)
    out: dict[str, Any] = {"win_rate": round(res.win_rate, 4), "won": int(res.impressions),
                           "auctions": int(res.auctions), "max_bid_sent": hi,
                           "median_price": {"truth": float(np.median(learn.price)),
                                            "naive_won": float(np.median(won)),
                                            "km": pooled.quantile(None, 0.5)},
                           "mean_price": {"truth": round(float(learn.price.mean()), 2),
                                          "naive_won": round(float(won.mean()), 2)},
                           "contexts": {}}
    for n_ctx in contexts:
        out["contexts"][str(n_ctx)] = evaluate(n_ctx, bidder.log, learn, held, prior, hi)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(default_data_dir()), help="folder with test.theta.txt and info.json")
    parser.add_argument("--prior", type=float, default=50.0, help="shrinkage strength m of the context curves")
    parser.add_argument("--contexts", type=int, nargs="+", default=[4, 16], help="pCTR-quantile context counts")
    parser.add_argument("--seed", type=int, default=0, help="seed of the exploring policy's jitter")
    parser.add_argument("--ledger", default=str(ROOT / "bench" / "ledgers" / "ipinyou-2997-landscape.jsonl"))
    args = parser.parse_args(argv)
    info = load_info(args.data)
    log = load_log(args.data)
    half = len(log) // 2
    learn, held = log.slice(0, half), log.slice(half, len(log))
    train_prices = np.asarray(info.price_counter_train, dtype=np.float64)
    median = float(np.searchsorted(np.cumsum(train_prices), 0.5 * train_prices.sum()))
    config = {"bench": "landscape", "prior": args.prior, "contexts": args.contexts, "seed": args.seed,
              "data": Path(args.data).name}
    out: dict[str, Any] = {**config, "learn_auctions": half, "heldout_auctions": len(log) - half,
                           "train_median_price": median, "train_ctr": round(info.ctr, 6), "policies": {}}
    t0 = time.perf_counter()
    for policy in ("const", "lin", "lin_explore"):
        r = run_policy(policy, learn, held, median, info.ctr, args.prior, args.contexts, args.seed)
        out["policies"][policy] = r
        print(f"{policy}: win rate {r['win_rate']:.3f}, max bid {r['max_bid_sent']}; median price: truth "
              f"{r['median_price']['truth']}, won-only {r['median_price']['naive_won']}, KM {r['median_price']['km']}")
        for n_ctx, block in r["contexts"].items():
            for truth in ("learn", "heldout"):
                for est, e in block[truth]["per_context"].items():
                    print(f"  {n_ctx:>2} ctx  truth {truth:<8} {est:<14} MAE {e['mae_all']:.4f} max {e['max_all']:.4f}"
                          f"   (bids <= max sent: MAE {e['mae_bid_range']:.4f} max {e['max_bid_range']:.4f})")
    out["seconds"] = round(time.perf_counter() - t0, 2)
    entry = ledger.append(Path(args.ledger), ROOT, config,
                          {p: {c: {t: b[t]["per_context"] for t in ("learn", "heldout")} for c, b in v["contexts"].items()}
                           for p, v in out["policies"].items()})
    out["ledger"] = {"commit": entry["commit"], "config_hash": entry["config_hash"]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
