"""Decision latency of the hybrid agent, single-threaded (issue #4 floor: p99 <= 1 ms per decision).

Measures, in one run on this machine:

* ``decision`` — one opportunity end to end on the agent's side: the enriched state vector and
  touch sequence (``build_states``), the LSTM journey encoder, the policy heads, sampling with
  the logged propensity, v̂ (click model × delay model × value) and the bid;
* ``batched`` — the same for a batch of 256 opportunities (the service's micro-batches), per item;
* ``bare_forward`` — the network forward alone (LSTM + heads on ready tensors), single and
  batched, as the baseline the agent's overhead is measured against;
* the same with a 128-unit LSTM (the size the issue quotes: ~0.3 ms p99 for the bare forward).

Prints a table, then one JSON object as the last stdout line.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import gc
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_service.agent.model.state import (
    CampaignStats,
    JourneyArrays,
    OpportunityArrays,
    PacingInputs,
    build_states,
)
from agent_service.agent.serving.hybrid import HybridAgent, spec_of
from agent_service.config.agent import HybridConfig

T0 = 1_767_225_600_000 + 15 * 3_600_000
CREATIVES = 60


def _inputs(n: int, spec, rng: np.random.Generator) -> tuple[OpportunityArrays, JourneyArrays]:
    opp = OpportunityArrays(T0 + rng.integers(0, 60_000, n), rng.integers(0, 3, n), np.ones((n, 3), bool),
                            np.full(n, 0.5), rng.dirichlet(np.ones(spec.segments), n), np.ones(n),
                            np.ones(n, np.int64), rng.integers(0, 4, n), np.zeros(n), np.arange(n))
    j = JourneyArrays.empty(n, spec.max_touches)
    k = spec.max_touches  # full journeys: the worst case for the LSTM input
    j.time_ms[:] = np.sort(T0 - rng.integers(0, 13 * 86_400_000, (n, k)), axis=1)
    j.channel[:] = rng.integers(0, 3, (n, k))
    j.creative[:] = rng.integers(0, spec.creatives, (n, k))
    j.clicked[:] = rng.random((n, k)) < 0.05
    return opp, j


def _timed(fn, reps: int) -> np.ndarray:
    out = np.empty(reps)
    for i in range(reps):
        t = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t
    return out


def measure(lstm_hidden: int, reps: int) -> dict[str, float]:
    cfg = HybridConfig(lstm_hidden=lstm_hidden)
    spec = spec_of(cfg, CREATIVES)
    agent = HybridAgent(spec, cfg, seed=0)
    agent.warmup()
    rng = np.random.default_rng(0)
    stats = CampaignStats(CREATIVES)
    pacing = PacingInputs(15.0, 5.0, 0.2, 0.6, 0.55, 0.2, 0.16, -0.5, 0.9, 1.0)
    one_opp, one_j = _inputs(1, spec, rng)
    big_opp, big_j = _inputs(256, spec, rng)

    def decide(opp: OpportunityArrays, j: JourneyArrays) -> None:
        b = build_states(spec, opp, j, pacing, stats)
        agent.act(b, opp.channel_mask, opp.floor_cpm_usd, 10.0)

    b1 = build_states(spec, one_opp, one_j, pacing, stats)
    b256 = build_states(spec, big_opp, big_j, pacing, stats)
    t1 = [torch.from_numpy(x) for x in b1]
    t256 = [torch.from_numpy(x) for x in b256]

    @torch.no_grad()
    def bare(t: list[torch.Tensor]) -> None:
        agent.net(*t)

    for _ in range(50):  # warm caches
        decide(one_opp, one_j)
        bare(t1)
    gc.collect()
    gc.freeze()  # as `gaelp serve` does once started: long-lived objects out of the collector's view
    single = _timed(lambda: decide(one_opp, one_j), reps)
    bare1 = _timed(lambda: bare(t1), reps)
    batched = _timed(lambda: decide(big_opp, big_j), max(20, reps // 20)) / 256
    bare256 = _timed(lambda: bare(t256), max(20, reps // 20)) / 256
    us = 1e6
    return {
        "lstm_hidden": lstm_hidden,
        "decision_p50_us": round(float(np.percentile(single, 50)) * us, 1),
        "decision_p99_us": round(float(np.percentile(single, 99)) * us, 1),
        "bare_forward_p50_us": round(float(np.percentile(bare1, 50)) * us, 1),
        "bare_forward_p99_us": round(float(np.percentile(bare1, 99)) * us, 1),
        "batched256_per_item_us": round(float(np.median(batched)) * us, 2),
        "bare_forward256_per_item_us": round(float(np.median(bare256)) * us, 2),
    }


def main() -> int:
    torch.set_num_threads(1)
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    rows = [measure(h, reps) for h in (HybridConfig().lstm_hidden, 128)]
    keys = list(rows[0])[1:]
    print(f"{'lstm_hidden':>12s} " + " ".join(f"{k:>28s}" for k in keys))
    for r in rows:
        print(f"{r['lstm_hidden']:>12d} " + " ".join(f"{r[k]:>28}" for k in keys))
    default = rows[0]
    print(json.dumps({
        "bench": "agent_latency", "threads": 1, "creatives": CREATIVES, "touches": 16, "reps": reps,
        "default": default, "lstm128": rows[1],
        "decision_p99_ms": round(default["decision_p99_us"] / 1000, 4),
        "floor_p99_1ms_met": default["decision_p99_us"] <= 1000.0,
        "overhead_vs_bare_p50": round(default["decision_p50_us"] / default["bare_forward_p50_us"], 2),
        # The yardstick, measured in this run: a bare 16-step LSTM-128 + heads forward
        # (about 0.3 ms p99 on the machine the floor was set on). The ratio carries across machines.
        "decision_p99_over_bare_lstm128_p99": round(default["decision_p99_us"] / rows[1]["bare_forward_p99_us"], 2),
        "decision_p99_ms_at_reference_0.3ms": round(
            0.3 * default["decision_p99_us"] / rows[1]["bare_forward_p99_us"], 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
