"""The reference side of bench_ope.py: runs *inside a throwaway virtualenv with obp 0.5.7*, never in ours.

obp pins torch 1.12, pandas 1.5 and scikit-learn 1.1 (and Python < 3.11), so the benchmark
installs it apart (``--ignore-requires-python --no-deps`` plus its libraries) and talks to it
through files:

  obp_reference.py dataset OUT.npz [--n-sim N] [--seed S]
      obp's bandit feedback of the random and bts logs (campaign "all"), Bernoulli-TS's
      action distribution as the obp examples compute it (ZOZOTOWN prior) and the on-policy
      value of the BTS log (OpenBanditDataset.calc_on_policy_policy_value_estimate).
  obp_reference.py estimate IN.npz OUT.json [IN2.npz OUT2.json ...]
      obp's IPW, SNIPW, DM, DR and Switch-DR on the arrays of IN.npz (reward, action, pscore,
      position, action_dist, q_hat, tau).
"""

from __future__ import annotations

import json
import sys

import numpy as np


def dataset(out: str, n_sim: int, seed: int) -> None:
    from obp.dataset import OpenBanditDataset
    from obp.policy import BernoulliTS

    arrays: dict[str, np.ndarray] = {}
    for policy in ("random", "bts"):
        ds = OpenBanditDataset(behavior_policy=policy, campaign="all")
        fb = ds.obtain_batch_bandit_feedback()
        for key in ("action", "position", "reward", "pscore", "context"):
            arrays[f"{policy}_{key}"] = np.asarray(fb[key])
    ds = OpenBanditDataset(behavior_policy="random", campaign="all")
    bts = BernoulliTS(n_actions=ds.n_actions, len_list=ds.len_list, is_zozotown_prior=True, campaign="all",
                      random_state=seed)
    arrays["bts_action_dist"] = bts.compute_batch_action_dist(n_sim=n_sim, n_rounds=ds.n_rounds)
    arrays["bts_on_policy_value"] = np.array(
        OpenBanditDataset.calc_on_policy_policy_value_estimate(behavior_policy="bts", campaign="all"))
    np.savez_compressed(out, **arrays)


def estimate(inp: str, out: str) -> None:
    from obp.ope import (
        DirectMethod,
        DoublyRobust,
        InverseProbabilityWeighting,
        SelfNormalizedInverseProbabilityWeighting,
        SwitchDoublyRobust,
    )

    z = np.load(inp)
    kw = dict(reward=z["reward"], action=z["action"], pscore=z["pscore"], position=z["position"],
              action_dist=z["action_dist"])
    q = z["q_hat"]
    res = {
        "ips": InverseProbabilityWeighting().estimate_policy_value(**kw),
        "snips": SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**kw),
        "dm": DirectMethod().estimate_policy_value(position=z["position"], action_dist=z["action_dist"],
                                                   estimated_rewards_by_reg_model=q),
        "dr": DoublyRobust().estimate_policy_value(**kw, estimated_rewards_by_reg_model=q),
        "switch-dr": SwitchDoublyRobust(lambda_=float(z["tau"])).estimate_policy_value(
            **kw, estimated_rewards_by_reg_model=q),
    }
    with open(out, "w") as f:
        json.dump({k: float(v) for k, v in res.items()}, f)


if __name__ == "__main__":
    if sys.argv[1] == "dataset":
        args = sys.argv[3:]
        n_sim = int(args[args.index("--n-sim") + 1]) if "--n-sim" in args else 100_000
        seed = int(args[args.index("--seed") + 1]) if "--seed" in args else 12345
        dataset(sys.argv[2], n_sim, seed)
    elif sys.argv[1] == "estimate":  # pairs: IN1 OUT1 IN2 OUT2 ... (obp imports once)
        for i in range(2, len(sys.argv) - 1, 2):
            estimate(sys.argv[i], sys.argv[i + 1])
    else:
        sys.exit(f"unknown mode {sys.argv[1]!r}")
