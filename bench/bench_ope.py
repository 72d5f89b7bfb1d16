"""Off-policy evaluation benchmark: ours against obp on the Open Bandit Dataset, and on a simulator with known truth.

1. **Open Bandit Dataset** (the sample obp 0.5.7 ships; ZOZOTOWN, campaign "all", CC BY 4.0).
   obp runs in a throwaway virtualenv (``--obp-venv``; ``--setup-obp`` builds it: obp pins
   torch 1.12 / pandas 1.5 and Python < 3.11, so it never enters the project's venv) and
   talks to us through ``.npz``/``.json`` files (``bench/obp_reference.py``). We read the CSV
   files with our own loader (``agent_service.evaluation.obd``) and compare its arrays to obp's.
   *Equality*: the same inputs (logged arrays, the candidate's action_dist, one reward model
   q̂ fitted once from the log by us and saved) go to obp's IPW / SNIPW / DM / DR / Switch-DR
   and ours; ``obp_max_abs_diff`` is the largest difference (floor 1e-6), over two cases:
   Bernoulli-TS (ZOZOTOWN prior, obp's ``compute_batch_action_dist``) on the random log, and
   the uniform random policy on the BTS log. *Standard check*: the estimate of BTS's value
   from the random log, with its 95% interval, against the on-policy value of the BTS log.
2. **Simulator** (``simulators.bid_bandit``: 8 bid multipliers, 180 context cells, second-price
   auctions, exact policy values). The live policy logs ``--n`` decisions (plus bad records that
   must be refused) which go through the real path (``build_feedback`` over closed 14-day
   windows, ``evaluate``); 5 candidates are estimated. The reward model for DR/DM is fitted from
   the log only: a cross-fitted mean per (segment × device, action) — it ignores the hour band,
   so it is misspecified and DM is biased. Then ``--reps`` repetitions on other seeds give each
   candidate's interval coverage (DR, seeded bootstrap; normal intervals beside).

Last stdout line: one JSON object. Usage::

    python bench/bench_ope.py [--obp-venv /tmp/obpvenv] [--setup-obp] [--n 100000] [--reps 50]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_service.evaluation.obd import find_obd_dir, load_obd
from agent_service.evaluation.ope import (
    cell_mean_rewards,
    direct_method,
    doubly_robust,
    ips,
    snips,
    switch_dr,
)
from agent_service.evaluation.ope_log import (
    WINDOW_MS,
    JoinedOutcome,
    LoggedDecision,
    build_feedback,
    evaluate,
)
from simulators.bid_bandit import BidBandit

OBP_PINS = ["numpy==1.24.4", "pandas==1.5.2", "scipy==1.9.3", "scikit-learn==1.1.3", "seaborn==0.11.2",
            "matplotlib<3.9", "tqdm", "PyYAML==6.0.1", "mypy-extensions==0.4.4"]
REFERENCE = Path(__file__).resolve().parent / "obp_reference.py"
SWITCH_TAU = 20.0


def setup_obp(venv: Path) -> None:
    """A throwaway venv with obp 0.5.7: obp without its pins (torch 1.12 has no Python 3.11 wheel), then
    the libraries it imports at versions that install on Python 3.11."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q"]
    subprocess.run([*pip, "--no-deps", "--ignore-requires-python", "obp==0.5.7"], check=True)
    subprocess.run([*pip, *OBP_PINS], check=True)
    if subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True).returncode:
        # obp.policy imports torch (the estimators never use it): 2.13.0 matches a local CPU wheel where the
        # machine has one (pip's find-links); a newer PyPI torch would bring gigabytes of CUDA libraries
        subprocess.run([*pip, "torch==2.13.0"], check=True)


def obp_python(venv: Path) -> str | None:
    py = venv / "bin" / "python"
    if not py.exists():
        return None
    ok = subprocess.run([str(py), "-c", "import obp"], capture_output=True)
    return str(py) if ok.returncode == 0 else None


# ---------------------------------------------------------------------------- Open Bandit Dataset
def _ours(reward: np.ndarray, action: np.ndarray, pscore: np.ndarray, position: np.ndarray, dist: np.ndarray,
          q: np.ndarray, seed: int, n_boot: int) -> dict[str, Any]:
    kw: dict[str, Any] = dict(seed=seed, n_boot=n_boot)
    return {
        "ips": ips(reward, action, pscore, dist, position, **kw),
        "snips": snips(reward, action, pscore, dist, position, **kw),
        "dm": direct_method(reward, action, pscore, dist, q, position, **kw),
        "dr": doubly_robust(reward, action, pscore, dist, q, position, **kw),
        "switch-dr": switch_dr(reward, action, pscore, dist, q, position, tau=SWITCH_TAU, **kw),
    }


def _q_hat(reward: np.ndarray, action: np.ndarray, position: np.ndarray, n_actions: int, len_list: int,
           seed: int) -> np.ndarray:
    """q̂[i, a, l]: cross-fitted mean click per (position, item), from the log only (the slice at
    each record's own position is the one the estimators read; the others hold the same fit)."""
    q2 = cell_mean_rewards(position, action, reward, len_list, n_actions, prior=50.0, seed=seed)
    return np.repeat(q2[:, :, None], len_list, axis=2)


def obd_section(py: str, work: Path, seed: int, n_boot: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    ref = work / "obd_ref.npz"
    subprocess.run([py, str(REFERENCE), "dataset", str(ref), "--n-sim", "100000", "--seed", "12345"], check=True,
                   capture_output=True)
    z = np.load(ref)
    data_dir = find_obd_dir(venv=Path(py).parent.parent)
    assert data_dir is not None, "obp is installed but its obd data directory was not found"
    logs = {p: load_obd(data_dir, p, "all") for p in ("random", "bts")}
    loader_diff = max(float(np.max(np.abs(getattr(logs[p], k) - z[f"{p}_{k}"])))
                      for p in logs for k in ("action", "position", "reward", "pscore", "context"))
    rnd, bts = logs["random"], logs["bts"]
    n_actions, len_list = rnd.n_actions, rnd.len_list
    cases = {
        "bts_on_random_log": (rnd, z["bts_action_dist"]),
        "random_on_bts_log": (bts, np.full((bts.n_rounds, n_actions, len_list), 1.0 / n_actions)),
    }
    ours: dict[str, dict[str, Any]] = {}
    call = [py, str(REFERENCE), "estimate"]
    for name, (fb, dist) in cases.items():
        q = _q_hat(fb.reward, fb.action, fb.position, n_actions, len_list, seed)
        np.savez(work / f"{name}.npz", reward=fb.reward, action=fb.action, pscore=fb.pscore, position=fb.position,
                 action_dist=dist, q_hat=q, tau=np.array(SWITCH_TAU))
        ours[name] = _ours(fb.reward, fb.action, fb.pscore, fb.position, dist, q, seed, n_boot)
        call += [str(work / f"{name}.npz"), str(work / f"{name}.json")]
    subprocess.run(call, check=True, capture_output=True)
    diffs, table = [], {}
    for name in cases:
        theirs = json.loads((work / f"{name}.json").read_text())
        table[name] = {k: {"ours": ours[name][k].value, "obp": theirs[k]} for k in theirs}
        diffs += [abs(ours[name][k].value - theirs[k]) for k in theirs]
    on_policy = float(z["bts_on_policy_value"])
    check = {}
    for k in ("ips", "snips", "dr"):
        e = ours["bts_on_random_log"][k]
        check[k] = {"estimate": e.value, "ci": [e.ci_low, e.ci_high], "covers_on_policy": e.covers(on_policy),
                    "ess": e.ess, "poor_support": e.poor_support}
    return {
        "obp_max_abs_diff": max(diffs),
        "obd_loader_max_abs_diff": loader_diff,
        "obd_estimates": table,
        "obd_bts_on_policy_value": on_policy,
        "obd_bts_from_random": check,
        "obd_bts_from_random_within_ci": all(c["covers_on_policy"] for c in check.values()),
        "obd_ci_method": ours["bts_on_random_log"]["dr"].ci_method,
        "obd_seconds": round(time.perf_counter() - t0, 1),
    }


# ---------------------------------------------------------------------------- simulator
def _coarse_cell(world: BidBandit, cell: np.ndarray) -> np.ndarray:
    """segment × device: the reward model does not see the hour band (misspecified on purpose)."""
    seg = cell // (world.bands * world.devices)
    return seg * world.devices + cell % world.devices


def sim_main_run(world: BidBandit, n: int, seed: int, n_boot: int) -> dict[str, Any]:
    """One log through the real path (records, refusal, windows, evaluate) and every candidate."""
    t0 = time.perf_counter()
    lg = world.log(n, seed)
    rng = np.random.default_rng(seed + 1)
    start = 1_700_000_000_000
    times = start + np.sort(rng.integers(0, 10 * 86_400_000, size=n))  # 10 days of decisions
    coarse = _coarse_cell(world, lg.cell)
    decisions = [LoggedDecision(f"d{i}", int(times[i]), int(lg.action[i]), float(lg.pscore[i]), 3, int(coarse[i]))
                 for i in range(n)]
    outcomes = {f"d{i}": JoinedOutcome(f"d{i}", float(lg.reward[i]), True, int(times[i]) + WINDOW_MS)
                for i in range(n)}
    bad = ([LoggedDecision(f"x{i}", start, 0, None, 3) for i in range(100)]
           + [LoggedDecision(f"y{i}", start, 0, 0.0, 3) for i in range(100)]
           + [LoggedDecision(f"z{i}", start, 0, 1.5, 3) for i in range(100)]
           + [LoggedDecision(f"u{i}", start, 0, 0.5, 99) for i in range(100)])
    as_of = int(times[-1]) + WINDOW_MS  # every window closed
    fb = build_feedback(decisions + bad, outcomes, known_versions={3}, as_of_ms=as_of, n_actions=world.n_actions)
    cell_of_used = np.asarray(lg.cell)  # the used records are the good ones, in order
    assert fb.reward.shape[0] == n
    truths, rows = {}, {}
    for name, pol in world.candidates().items():
        truth = world.value(pol)
        rep = evaluate(fb, pol[cell_of_used], candidate=name, n_cells=world.segments * world.devices, tau=SWITCH_TAU,
                       n_boot=n_boot, seed=seed)
        truths[name] = truth
        rows[name] = {k: {"value": e.value, "ci": [e.ci_low, e.ci_high], "rel_error": abs(e.value - truth) / truth,
                          "covers": e.covers(truth), "ess": round(e.ess), "poor_support": e.poor_support}
                      for k, e in rep.estimates.items()}
    err = {k: max(rows[c][k]["rel_error"] for c in rows) for k in ("ips", "snips", "dm", "dr", "switch-dr")}
    noise = lg.reward - world.expected_reward[lg.cell, lg.action]
    return {
        "sim_dr_rel_error": err["dr"],
        "sim_baseline_rel_error": {k: v for k, v in err.items() if k != "dr"},
        "sim_truth": truths,
        "sim_candidates": rows,
        "sim_validation": fb.report.summary(),
        "sim_refused": fb.report.refused,
        "sim_reward_noise_sd": float(noise.std()),
        "sim_logging_value": world.value(world.logging_policy),
        "sim_main_seconds": round(time.perf_counter() - t0, 1),
    }


def sim_coverage(world: BidBandit, n: int, reps: int, seed0: int, n_boot: int) -> dict[str, Any]:
    """Each candidate's interval coverage over ``reps`` logs on seeds ``seed0 + r``."""
    t0 = time.perf_counter()
    cands = world.candidates()
    truth = {k: world.value(p) for k, p in cands.items()}
    names = list(cands)
    cover = {m: np.zeros((reps, len(names)), dtype=bool) for m in ("dr_bootstrap", "dr_normal", "ips_normal",
                                                                    "snips_normal")}
    max_err = {m: np.zeros(reps) for m in ("dr", "ips", "dm")}
    for r in range(reps):
        lg = world.log(n, seed0 + r)
        q = cell_mean_rewards(_coarse_cell(world, lg.cell), lg.action, lg.reward, world.segments * world.devices,
                              world.n_actions, seed=seed0 + r)
        for j, name in enumerate(names):
            d = cands[name][lg.cell]
            t = truth[name]
            boot = doubly_robust(lg.reward, lg.action, lg.pscore, d, q, n_boot=n_boot, seed=seed0 + r)
            norm = doubly_robust(lg.reward, lg.action, lg.pscore, d, q, ci="normal")
            e_ips = ips(lg.reward, lg.action, lg.pscore, d, ci="normal")
            e_sn = snips(lg.reward, lg.action, lg.pscore, d, ci="normal")
            e_dm = direct_method(lg.reward, lg.action, lg.pscore, d, q, ci="normal")
            cover["dr_bootstrap"][r, j], cover["dr_normal"][r, j] = boot.covers(t), norm.covers(t)
            cover["ips_normal"][r, j], cover["snips_normal"][r, j] = e_ips.covers(t), e_sn.covers(t)
            for m, e in (("dr", norm), ("ips", e_ips), ("dm", e_dm)):
                max_err[m][r] = max(max_err[m][r], abs(e.value - t) / t)
    per = {m: dict(zip(names, c.mean(axis=0).round(3).tolist(), strict=True)) for m, c in cover.items()}
    return {
        "sim_ci_coverage": float(cover["dr_bootstrap"].mean(axis=0).min()),
        "sim_ci_coverage_per_candidate": per,
        "sim_ci_coverage_all_five_at_once": float(cover["dr_bootstrap"].all(axis=1).mean()),
        "sim_rel_error_p95_over_reps": {m: float(np.percentile(v, 95)) for m, v in max_err.items()},
        "sim_reps": reps,
        "sim_coverage_seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--obp-venv", type=Path, default=Path(os.environ.get("GAELP_OBP_VENV", "/tmp/obpvenv")))
    ap.add_argument("--setup-obp", action="store_true", help="build the obp venv when it is missing (needs PyPI)")
    ap.add_argument("--n", type=int, default=100_000, help="logged decisions per simulated log")
    ap.add_argument("--reps", type=int, default=50, help="coverage repetitions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--boot", type=int, default=200, help="bootstrap resamples per interval")
    args = ap.parse_args()
    out: dict[str, Any] = {}
    py = obp_python(args.obp_venv)
    if py is None and args.setup_obp:
        setup_obp(args.obp_venv)
        py = obp_python(args.obp_venv)
    if py is None:
        out.update(obp_max_abs_diff=None, obd_skipped=f"no obp in {args.obp_venv} (run with --setup-obp)")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out.update(obd_section(py, Path(tmp), args.seed, n_boot=2000))
    world = BidBandit()
    out.update(sim_main_run(world, args.n, args.seed, args.boot))
    out.update(sim_coverage(world, args.n, args.reps, 1000 + args.seed, args.boot))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    out.update(n=args.n, switch_tau=SWITCH_TAU, bootstrap_resamples=args.boot,
               seeds={"main_log": args.seed, "coverage_logs": [1000 + args.seed, 1000 + args.seed + args.reps - 1],
                      "world": world.seed, "bts_action_dist": 12345},
               commit=commit.stdout.strip() or None)
    floors = {"obp_max_abs_diff<=1e-6": out["obp_max_abs_diff"] is not None and out["obp_max_abs_diff"] <= 1e-6,
              "sim_dr_rel_error<=0.05": out["sim_dr_rel_error"] <= 0.05,
              "sim_ci_coverage>=0.90": out["sim_ci_coverage"] >= 0.90,
              "obd_bts_from_random_within_ci": bool(out.get("obd_bts_from_random_within_ci"))}
    out["floors_met"] = floors
    print(json.dumps(out))


if __name__ == "__main__":
    main()
