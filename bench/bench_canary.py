"""Canary benchmark: does the always-valid test on value per dollar keep its error rate when looked at after
every batch, and how much data does it need to promote a better candidate?

Simulated persons (delays ignored): spend ~ exponential (mean ``--spend-mean`` USD); a person converts with
probability ``--conv-rate`` (candidate: times ``1 + lift``), and a conversion's value is lognormal
(``--value-sigma``, mean ``--value-mean`` USD) — most persons are worth 0, a few a lot. The candidate serves
``--share`` of persons (a binomial draw per batch, as hashed assignment gives; the hash itself is tested in
tests/unit/test_canary.py). Every run is one :class:`~agent_service.experiments.canary.Canary` (no ramp) fed
the batch's per-person sums and evaluated after each batch of ``--batch`` persons, up to ``--horizon``
persons.

Scenarios, all in one run:
- A/A (``--runs`` runs): any promote or rollback is wrong -> ``canary_wrong_decision_rate`` (floor <= 0.05).
- candidate better by ``--lift`` in value per dollar: conversions and persons until promotion (median, p90),
  the share promoted within the horizon, and the share wrongly rolled back.
- baseline on the very same data: a fixed-horizon z-test (delta method, |z| > 1.96, same minimum sample)
  peeked at after every batch, as a dashboard invites.
- guardrails: A/A with per-person requests, no-bids and errors (short horizon) -> false rollbacks; and a
  candidate whose spend per request is 50 % higher -> share rolled back by the spend-rate guardrail.

Last stdout line: one JSON object. Usage: ``python bench/bench_canary.py [--runs 200] [--seed 0]``.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_service.config.experiments import CanaryConfig, GuardrailConfig, SequentialConfig
from agent_service.experiments.canary import Canary, CanaryState
from agent_service.experiments.sequential import Arm, RatioStats

FIELDS = ("n", "sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy", "n_pos")


@dataclass(frozen=True)
class World:
    conv_rate: float
    value_mean: float
    value_sigma: float
    spend_mean: float

    @property
    def value_mu(self) -> float:
        return math.log(self.value_mean) - self.value_sigma ** 2 / 2


# ---------------------------------------------------------------------------------------
# Simulation: one batch of persons for many runs at once, reduced to each arm's sums
# ---------------------------------------------------------------------------------------
def simulate_batch(rng: np.random.Generator, runs: int, batch: int, share: float, world: World,
                   conv_mult: float) -> dict[Arm, dict[str, np.ndarray]]:
    """Per-arm sums (fields of RatioStats, x = value, y = spend) of ``batch`` persons in each of ``runs`` runs.

    Persons are exchangeable, so the candidate's persons are taken as the first ``n_c`` columns and, within an
    arm, the converters as its first ``k`` persons; prefix sums then give every arm's sums without masks.
    """
    rows = np.arange(runs)
    n_c = rng.binomial(batch, share, size=runs)
    n_0 = batch - n_c
    s = rng.standard_exponential((runs, batch)) * world.spend_mean
    cs, cs2 = np.cumsum(s, axis=1), np.cumsum(s * s, axis=1)

    def prefix(c: np.ndarray, n: np.ndarray) -> np.ndarray:
        return np.where(n > 0, c[rows, np.maximum(n - 1, 0)], 0.0)

    sy_c, syy_c = prefix(cs, n_c), prefix(cs2, n_c)
    out = {Arm.CANDIDATE: {"n": n_c, "sum_y": sy_c, "sum_yy": syy_c},
           Arm.CONTROL: {"n": n_0, "sum_y": cs[:, -1] - sy_c, "sum_yy": cs2[:, -1] - syy_c}}
    for arm, first, n, p in ((Arm.CANDIDATE, np.zeros(runs, dtype=np.int64), n_c, world.conv_rate * conv_mult),
                             (Arm.CONTROL, n_c, n_0, world.conv_rate)):
        k = rng.binomial(n, p)
        kmax = int(k.max())
        if kmax == 0:
            z = np.zeros(runs)
            out[arm].update(sum_x=z, sum_xx=z, sum_xy=z, n_pos=k)
            continue
        j = np.arange(kmax)
        mask = j[None, :] < k[:, None]
        cols = np.minimum(first[:, None] + j[None, :], batch - 1)
        sp = s[rows[:, None], cols]
        v = rng.lognormal(world.value_mu, world.value_sigma, (runs, kmax)) * mask
        out[arm].update(sum_x=v.sum(1), sum_xx=(v * v).sum(1), sum_xy=(v * sp).sum(1), n_pos=k)
    return out


def log_ratio_var(t: dict[str, np.ndarray]) -> np.ndarray:
    """Vectorised copy of RatioStats.log_ratio_var (checked against it at the end of each scenario)."""
    n = t["n"]
    with np.errstate(divide="ignore", invalid="ignore"):
        mx, my = t["sum_x"] / n, t["sum_y"] / n
        ss = t["sum_xx"] / mx ** 2 - 2 * t["sum_xy"] / (mx * my) + t["sum_yy"] / my ** 2
        v = np.maximum(ss, 0) / (n - 1) / n
    return np.where((n >= 2) & (t["sum_x"] > 0) & (t["sum_y"] > 0), v, np.inf)


# ---------------------------------------------------------------------------------------
# One scenario: the canaries and the peeked z-test on the same data
# ---------------------------------------------------------------------------------------
def run_scenario(args: argparse.Namespace, cfg: CanaryConfig, world: World, conv_mult: float,
                 seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    runs, test = args.runs, cfg.test
    canaries = [Canary(f"bench-{seed}-{i}", cfg) for i in range(runs)]
    for c in canaries:
        c.start(0)
    cum = {a: {f: np.zeros(runs) for f in FIELDS} for a in Arm}
    res = {name: np.full(runs, np.nan) for name in
           ("mix_dec", "mix_persons", "mix_conv", "mix_conv_cand", "z_dec", "z_persons", "z_conv", "z_conv_cand")}
    for b in range(args.horizon // args.batch):
        active = np.flatnonzero(np.isnan(res["mix_dec"]) | np.isnan(res["z_dec"]))
        if active.size == 0:
            break
        sums = simulate_batch(rng, active.size, args.batch, cfg.share, world, conv_mult)
        for a in Arm:
            for f in FIELDS:
                cum[a][f][active] += sums[a][f]
        conv = cum[Arm.CONTROL]["n_pos"] + cum[Arm.CANDIDATE]["n_pos"]
        persons = cum[Arm.CONTROL]["n"] + cum[Arm.CANDIDATE]["n"]
        for j, r in enumerate(active):
            c = canaries[r]
            if c.state is not CanaryState.RUNNING:
                continue
            for a in Arm:
                t = sums[a]
                c.test.add_stats(a, RatioStats(int(t["n"][j]), float(t["sum_x"][j]), float(t["sum_y"][j]),
                                               float(t["sum_xx"][j]), float(t["sum_yy"][j]),
                                               float(t["sum_xy"][j]), int(t["n_pos"][j])))
            c.evaluate((b + 1) * 60_000)
            if c.state in (CanaryState.PROMOTED, CanaryState.ROLLED_BACK):
                res["mix_dec"][r] = 1.0 if c.state is CanaryState.PROMOTED else -1.0
                res["mix_persons"][r], res["mix_conv"][r] = persons[r], conv[r]
                res["mix_conv_cand"][r] = cum[Arm.CANDIDATE]["n_pos"][r]
            elif c.state is CanaryState.HELD:
                res["mix_dec"][r] = 0.0
        # Baseline: fixed-horizon z-test on the same delta-method estimate, read after every batch.
        c0, c1 = cum[Arm.CONTROL], cum[Arm.CANDIDATE]
        var = log_ratio_var(c0) + log_ratio_var(c1)
        with np.errstate(divide="ignore", invalid="ignore"):
            delta = np.log(c1["sum_x"] / c1["sum_y"]) - np.log(c0["sum_x"] / c0["sum_y"])
            z = delta / np.sqrt(var)
        ready = ((np.minimum(c0["n"], c1["n"]) >= test.min_persons)
                 & (np.minimum(c0["n_pos"], c1["n_pos"]) >= test.min_conversions) & np.isfinite(z))
        new = ready & np.isnan(res["z_dec"]) & (np.abs(z) > 1.959964)
        res["z_dec"][new] = np.sign(z[new])
        res["z_persons"][new], res["z_conv"][new] = persons[new], conv[new]
        res["z_conv_cand"][new] = c1["n_pos"][new]
    res["z_dec"][np.isnan(res["z_dec"])] = 0.0
    res["mix_dec"][np.isnan(res["mix_dec"])] = 0.0
    # The vectorised baseline and the domain code must see the same variance.
    probe = canaries[0].test.stats
    v_dom = probe[Arm.CONTROL].log_ratio_var() + probe[Arm.CANDIDATE].log_ratio_var()
    assert math.isclose(v_dom, float(var[0]), rel_tol=1e-6) or canaries[0].state is not CanaryState.RUNNING
    return res


def quantiles(x: np.ndarray) -> dict[str, float | None]:
    """Median and p90 over all runs, a run without the event counting as never (censored at the horizon):
    None when the quantile lies beyond the horizon."""
    x = np.where(np.isfinite(x), x, np.inf)
    if x.size == 0:
        return {"median": None, "p90": None}
    q = np.quantile(x, [0.5, 0.9], method="inverted_cdf")
    return {"median": float(q[0]) if np.isfinite(q[0]) else None, "p90": float(q[1]) if np.isfinite(q[1]) else None}


# ---------------------------------------------------------------------------------------
# Guardrails: per-person requests, no-bids and errors, person by person through Canary.observe_many
# ---------------------------------------------------------------------------------------
def run_guardrails(args: argparse.Namespace, cfg: CanaryConfig, world: World, spend_mult: float,
                   seed: int) -> dict[str, float | None]:
    rng = np.random.default_rng(seed)
    rolled, by_guard, persons_at = 0, 0, []
    for i in range(args.guard_runs):
        c = Canary(f"guard-{seed}-{i}", cfg)
        c.start(0)
        seen = 0
        for b in range(args.guard_horizon // args.batch):
            n_c = int(rng.binomial(args.batch, cfg.share))
            for arm, n, mult in ((Arm.CANDIDATE, n_c, spend_mult), (Arm.CONTROL, args.batch - n_c, 1.0)):
                req = 1 + rng.poisson(3.0, n)
                spend = rng.standard_exponential(n) * world.spend_mean * req / 4.0 * mult
                value = (rng.random(n) < world.conv_rate) * rng.lognormal(world.value_mu, world.value_sigma, n) * mult
                c.observe_many(arm, value, spend, req, rng.binomial(req, 0.15), rng.binomial(req, 0.002))
            seen += args.batch
            events = c.evaluate((b + 1) * 60_000)
            if c.state is CanaryState.ROLLED_BACK:
                rolled += 1
                by_guard += events[-1].reason.startswith("guardrail")
                persons_at.append(seen)
            if c.state is not CanaryState.RUNNING:
                break
    q = quantiles(np.array(persons_at, dtype=float))
    return {"rollback_rate": rolled / args.guard_runs, "guardrail_rollback_rate": by_guard / args.guard_runs,
            "median_persons_to_rollback": q["median"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--share", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=20_000, help="persons (both arms) between two looks")
    ap.add_argument("--horizon", type=int, default=3_000_000, help="persons (both arms) per run")
    ap.add_argument("--lift", type=float, default=0.10, help="relative lift of the better candidate")
    ap.add_argument("--conv-rate", type=float, default=0.05)
    ap.add_argument("--value-mean", type=float, default=40.0)
    ap.add_argument("--value-sigma", type=float, default=1.0)
    ap.add_argument("--spend-mean", type=float, default=0.8)
    ap.add_argument("--guard-runs", type=int, default=100)
    ap.add_argument("--guard-horizon", type=int, default=200_000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    world = World(args.conv_rate, args.value_mean, args.value_sigma, args.spend_mean)
    cfg = CanaryConfig(share=args.share, stage_min_persons=1, max_persons=args.horizon + 1,
                       test=SequentialConfig(alpha=0.05, mixture_sd=0.10, min_persons=1000, min_conversions=100))
    seeds = {"aa": args.seed, "better": args.seed + 1, "guard_aa": args.seed + 2, "guard_spend": args.seed + 3}

    aa = run_scenario(args, cfg, world, 1.0, seeds["aa"])
    better = run_scenario(args, cfg, world, 1.0 + args.lift, seeds["better"])
    gcfg = CanaryConfig(share=args.share, stage_min_persons=1, max_persons=args.guard_horizon + 1,
                        test=cfg.test, guardrails=GuardrailConfig())
    g_aa = run_guardrails(args, gcfg, world, 1.0, seeds["guard_aa"])
    g_spend = run_guardrails(args, gcfg, world, 1.5, seeds["guard_spend"])

    n = args.runs
    out = {
        "runs": n, "seeds": seeds, "share": args.share, "batch_persons": args.batch, "horizon_persons": args.horizon,
        "lift": args.lift,
        "world": {"conv_rate": args.conv_rate, "value_mean": args.value_mean, "value_sigma": args.value_sigma,
                  "spend_mean": args.spend_mean},
        "canary_wrong_decision_rate": float(np.mean(aa["mix_dec"] != 0)),
        "canary_aa_promote_rate": float(np.mean(aa["mix_dec"] > 0)),
        "canary_aa_rollback_rate": float(np.mean(aa["mix_dec"] < 0)),
        "naive_wrong_decision_rate": float(np.mean(aa["z_dec"] != 0)),
        "better_promoted_share": float(np.mean(better["mix_dec"] > 0)),
        "better_wrong_rollback_rate": float(np.mean(better["mix_dec"] < 0)),
        "better_conversions_to_promote": quantiles(np.where(better["mix_dec"] > 0, better["mix_conv"], np.nan)),
        "better_candidate_conversions_to_promote": quantiles(
            np.where(better["mix_dec"] > 0, better["mix_conv_cand"], np.nan)),
        "better_persons_to_promote": quantiles(np.where(better["mix_dec"] > 0, better["mix_persons"], np.nan)),
        "naive_better_promoted_share": float(np.mean(better["z_dec"] > 0)),
        "naive_better_wrong_rollback_rate": float(np.mean(better["z_dec"] < 0)),
        "naive_better_conversions_to_promote": quantiles(np.where(better["z_dec"] > 0, better["z_conv"], np.nan)),
        "guardrail_aa_false_rollback_rate": g_aa["rollback_rate"],
        "guardrail_spend_plus50_rollback_rate": g_spend["guardrail_rollback_rate"],
        "guardrail_spend_plus50_median_persons": g_spend["median_persons_to_rollback"],
        "guard_runs": args.guard_runs, "guard_horizon_persons": args.guard_horizon,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"A/A, {n} runs, looked at every {args.batch} persons up to {args.horizon}:")
    print(f"  mSPRT canary   wrong decisions {out['canary_wrong_decision_rate']:.3f} "
          f"(promote {out['canary_aa_promote_rate']:.3f}, rollback {out['canary_aa_rollback_rate']:.3f})")
    print(f"  peeked z-test  wrong decisions {out['naive_wrong_decision_rate']:.3f}")
    print(f"candidate +{args.lift:.0%} value per dollar:")
    print(f"  mSPRT canary   promoted {out['better_promoted_share']:.3f}, wrongly rolled back "
          f"{out['better_wrong_rollback_rate']:.3f}; conversions to promote {out['better_conversions_to_promote']} "
          f"(candidate arm {out['better_candidate_conversions_to_promote']}), persons "
          f"{out['better_persons_to_promote']}")
    print(f"  peeked z-test  promoted {out['naive_better_promoted_share']:.3f}, wrongly rolled back "
          f"{out['naive_better_wrong_rollback_rate']:.3f}; conversions {out['naive_better_conversions_to_promote']}")
    print(f"guardrails ({args.guard_runs} runs, {args.guard_horizon} persons): A/A false rollbacks "
          f"{out['guardrail_aa_false_rollback_rate']:.3f}; spend +50 % rolled back by the guardrail "
          f"{out['guardrail_spend_plus50_rollback_rate']:.3f} (median persons "
          f"{out['guardrail_spend_plus50_median_persons']})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
