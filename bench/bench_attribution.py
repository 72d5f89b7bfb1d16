"""Attribution benchmark: GAELP vs ``channelattribution`` on the same 100,000 distinct paths.

Measures, side by side in one run (medians of ``--repeats`` interleaved runs):
- Markov removal-effect attribution time: ours (parse + exact chain solve) vs
  ``channelattribution.markov_model`` with its defaults, both from the same in-memory
  columns, and both from the same CSV file (ours ``read_paths_csv``; theirs ``pandas.read_csv``);
- Markov credit agreement per channel against ``channelattribution`` run accurately
  (``max_step`` large, many simulations) and with its defaults (journeys cut at the longest
  observed path: the known low bias);
- heuristic models (first, last, linear): largest relative difference, expected 0.

The paths are synthetic and seeded (12 channels, geometric lengths, conversion probability
rising with the channels touched). ``channelattribution`` is GPL: it is only imported here.

Last stdout line: one JSON object. Usage: ``python bench/bench_attribution.py [--paths 100000]``.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import contextlib
import csv
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_service.attribution import MarkovModel, PathTable, attribute_paths, read_paths_csv


def make_paths(n_paths: int, n_channels: int = 12, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """``n_paths`` distinct seeded paths with conversions, value and nulls."""
    rng = np.random.default_rng(seed)
    names = [f"channel_{i:02d}" for i in range(n_channels)]
    popularity = rng.dirichlet(np.full(n_channels, 3.0))
    lift = rng.uniform(0.2, 1.5, n_channels)
    rows: dict[str, tuple[int, int, float]] = {}
    while len(rows) < n_paths:
        lengths = np.clip(rng.geometric(0.2, size=2 * n_paths), 1, 40)
        steps = rng.choice(n_channels, size=int(lengths.sum()), p=popularity)
        journeys = rng.integers(1, 60, size=lengths.shape[0])
        pos = 0
        for length, n in zip(lengths, journeys, strict=True):
            path = steps[pos:pos + length]
            pos += length
            key = " > ".join(names[c] for c in path)
            if key in rows:
                continue
            conv = int(rng.binomial(int(n), min(0.9, 0.02 * float(lift[path].sum()))))
            rows[key] = (conv, int(n) - conv, round(conv * float(rng.uniform(20, 200)), 2))
            if len(rows) == n_paths:
                break
    paths = list(rows)
    conv = np.array([rows[p][0] for p in paths], dtype=np.int64)
    null = np.array([rows[p][1] for p in paths], dtype=np.int64)
    value = np.array([rows[p][2] for p in paths])
    return paths, conv, value, null


def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def _agreement(channels, ours: np.ndarray, theirs: dict[str, float]) -> dict[str, float]:
    ref = np.array([theirs[c] for c in channels])
    rel = np.abs(ours / ref - 1)
    share_o, share_t = ours / ours.sum(), ref / ref.sum()
    big = share_t >= 0.01
    return {
        "max_rel_diff": float(rel.max()),
        "max_rel_diff_channels_over_1pct": float(rel[big].max()),
        "total_variation_of_shares": float(0.5 * np.abs(share_o - share_t).sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paths", type=int, default=100_000)
    ap.add_argument("--channels", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--accurate-sims", type=float, default=3e6, help="channelattribution nsim_start for agreement")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import ChannelAttribution as ca
    import pandas as pd

    t = time.perf_counter()
    paths, conv, value, null = make_paths(args.paths, args.channels, args.seed)
    gen_s = time.perf_counter() - t
    df = pd.DataFrame({"path": paths, "total_conversions": conv, "total_conversion_value": value,
                       "total_null": null})
    tmp = Path(tempfile.mkdtemp(prefix="gaelp-bench-attr-")) / "paths.csv"
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "total_conversions", "total_conversion_value", "total_null"])
        w.writerows(zip(paths, conv.tolist(), value.tolist(), null.tolist(), strict=True))

    def ours_mem():
        t0 = time.perf_counter()
        table = PathTable.from_columns(paths, conv, value, null)
        t1 = time.perf_counter()
        model = MarkovModel.fit(table)
        credit = model.credit()
        t2 = time.perf_counter()
        return t2 - t0, t1 - t0, t2 - t1, table, credit

    def ours_csv():
        t0 = time.perf_counter()
        model = MarkovModel.fit(read_paths_csv(tmp))
        model.credit()
        return time.perf_counter() - t0

    def theirs(frame, **kw):
        return _quiet(ca.markov_model, frame, "path", "total_conversions", var_value="total_conversion_value",
                      var_null="total_null", out_more=True, verbose=False, flg_pro=False, **kw)

    def theirs_mem():
        t0 = time.perf_counter()
        res = theirs(df)
        return time.perf_counter() - t0, res

    def theirs_csv():
        t0 = time.perf_counter()
        theirs(pd.read_csv(tmp))
        return time.perf_counter() - t0

    o_tot, o_parse, o_solve, o_csv, t_mem, t_csv = [], [], [], [], [], []
    for _ in range(args.repeats):  # interleaved: both see the same machine load
        tot, parse, solve, table, credit = ours_mem()
        o_tot.append(tot)
        o_parse.append(parse)
        o_solve.append(solve)
        dt, res_default = theirs_mem()
        t_mem.append(dt)
        o_csv.append(ours_csv())
        t_csv.append(theirs_csv())
    med = statistics.median

    t0 = time.perf_counter()
    res_acc = theirs(df, max_step=10_000, nsim_start=args.accurate_sims)
    acc_s = time.perf_counter() - t0
    ours_conv, ours_val = credit
    ref_acc = res_acc["result"].set_index("channel_name")
    ref_def = res_default["result"].set_index("channel_name")
    chans = table.channels
    model = MarkovModel.fit(table)
    re_acc = res_acc["removal_effects"].set_index("channel_name")["removal_effects_conversion"]
    re_def = res_default["removal_effects"].set_index("channel_name")["removal_effects_conversion"]

    heur = _quiet(ca.heuristic_models, df, "path", "total_conversions", var_value="total_conversion_value",
                  flg_pro=False).set_index("channel_name")
    heur_diff = {}
    for ours_name, their_name in (("first", "first_touch"), ("last", "last_touch"), ("linear", "linear_touch")):
        got = attribute_paths(table, ours_name)
        worst = 0.0
        for arr, col in ((got.conversions, "conversions"), (got.values, "value")):
            ref = np.array([heur.loc[c, f"{their_name}_{col}"] for c in chans])
            worst = max(worst, float(np.max(np.abs(arr - ref) / np.maximum(np.abs(ref), 1e-12))))
        heur_diff[ours_name] = worst

    result = {
        "bench": "attribution",
        "paths": args.paths,
        "channels": len(chans),
        "steps": int(table.codes.shape[0]),
        "generate_s": round(gen_s, 3),
        "markov_ours_s": round(med(o_tot), 4),
        "markov_ours_parse_s": round(med(o_parse), 4),
        "markov_ours_solve_s": round(med(o_solve), 4),
        "markov_channelattribution_s": round(med(t_mem), 4),
        "speedup_vs_channelattribution": round(med(t_mem) / med(o_tot), 2),
        "markov_ours_from_csv_s": round(med(o_csv), 4),
        "markov_channelattribution_from_csv_s": round(med(t_csv), 4),
        "channelattribution_accurate_s": round(acc_s, 2),
        "channelattribution_accurate_settings": {"max_step": 10_000, "nsim_start": args.accurate_sims},
        "agreement_vs_accurate": {
            "conversions": _agreement(chans, ours_conv, ref_acc["total_conversions"].to_dict()),
            "value": _agreement(chans, ours_val, ref_acc["total_conversion_value"].to_dict()),
            "removal_effect_max_rel_diff": float(max(abs(model.removal_effects[i] / re_acc[c] - 1)
                                                     for i, c in enumerate(chans))),
        },
        "agreement_vs_default": {
            "conversions": _agreement(chans, ours_conv, ref_def["total_conversions"].to_dict()),
            "value": _agreement(chans, ours_val, ref_def["total_conversion_value"].to_dict()),
            "removal_effect_mean_ratio_theirs_over_exact": float(np.mean(
                [re_def[c] / model.removal_effects[i] for i, c in enumerate(chans)])),
        },
        "heuristics_max_rel_diff": heur_diff,
        "repeats": args.repeats,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
