"""Simulator benchmark (BENCHMARKS.md §3 "simulator throughput"; issue #3 floors).

Measured in one run, medians over ``--repeats``:
- core auction step: single-slot second-price auctions with 6 bidders per auction (winner with
  random tie-breaking, price = max(second bid, reserve), click of the winner) by
  ``simulators.auctions.second_price`` on int32 tick prices, against a bare numpy loop over the
  same auctions (float bids (n, 6): argmax, ``np.partition`` for the second price, click draw; no
  reserve, no tie-breaking) — the ratio is the floor's "at least 40 % of bare numpy";
- the same with the competing bids drawn from the calibrated log-normal landscape inside the
  timed region (both sides draw them);
- full simulated opportunities per second: ``Engine.sample`` + ``Engine.resolve`` (people,
  devices, channels, floors, competitors, auction, creative, click, journey update, conversion
  scheduling) over simulated hours, at training scale (large hourly batches) and at the stream's
  default scale (20k opportunities a day in 96 slots);
- the vector environment's opportunities per second at 16 and 256 copies (one opportunity per
  copy per step, service-state observations);
- determinism: two runs of the same seed give identical outcome bytes.
For scale: AuctionGym's own loop runs about 7,400 rounds per second with 6 participants on this
machine (issue #3; not re-measured here).

Last stdout line: one JSON object. Usage: ``python bench/bench_sim.py [--repeats 5] [--batch 200000]``.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_service.units import DAY_MS, HOUR_MS
from simulators.auctions import second_price, to_ticks
from simulators.batches import Actions, EngineConfig
from simulators.calibration import load_calibration
from simulators.engine import Engine
from simulators.env_core import EnvConfig
from simulators.vector_env import GaelpVectorEnv


def _rate(fn: Callable[[], int], repeats: int) -> float:
    """Median items per second of ``fn`` (which returns how many items it did)."""
    fn()  # warm-up
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates)


def bench_auctions(batch: int, rounds: int, repeats: int) -> dict[str, float]:
    cal = load_calibration()
    social = cal.channels.social
    k = social.competitors + 1
    rng = np.random.default_rng(0)
    floats = [np.exp(np.log(social.competitor_cpm) + social.competitor_sigma * rng.standard_normal((batch, k)))
              for _ in range(rounds)]
    ticks = [np.ascontiguousarray(to_ticks(b).T) for b in floats]
    reserve = to_ticks(np.full(batch, cal.traffic.floor_cpm))
    ctr = [rng.random((batch, k)) * 0.02 for _ in range(rounds)]
    ctr_t = [np.ascontiguousarray(c.T).astype(np.float32) for c in ctr]
    cols = np.arange(batch)

    def bare() -> int:
        r = np.random.default_rng(1)
        for b, c in zip(floats, ctr, strict=True):
            w = b.argmax(axis=1)
            _price = np.partition(b, -2, axis=1)[:, -2]
            _click = r.random(batch) < c[cols, w]
        return batch * rounds

    def ours() -> int:
        r = np.random.default_rng(1)
        for b, c in zip(ticks, ctr_t, strict=True):
            alloc = second_price(b, reserve, r)
            won = alloc.winner >= 0
            _click = won & (r.random(batch, dtype=np.float32) < c[np.maximum(alloc.winner, 0), cols])
        return batch * rounds

    med, sig = np.log(social.competitor_cpm), social.competitor_sigma

    def bare_draw() -> int:
        r = np.random.default_rng(2)
        for c in ctr:
            b = np.exp(med + sig * r.standard_normal((batch, k)))
            w = b.argmax(axis=1)
            _price = np.partition(b, -2, axis=1)[:, -2]
            _click = r.random(batch) < c[cols, w]
        return batch * rounds

    def ours_draw() -> int:
        r = np.random.default_rng(2)
        for c in ctr_t:
            b = to_ticks(np.exp(med + sig * r.standard_normal((k, batch), dtype=np.float32)))
            alloc = second_price(b, reserve, r)
            won = alloc.winner >= 0
            _click = won & (r.random(batch, dtype=np.float32) < c[np.maximum(alloc.winner, 0), cols])
        return batch * rounds

    out = {"bare_numpy_auctions_per_s": _rate(bare, repeats), "auctions_per_s": _rate(ours, repeats),
           "bare_numpy_with_draw_per_s": _rate(bare_draw, repeats), "auctions_with_draw_per_s": _rate(ours_draw, repeats)}
    out["ratio_vs_bare"] = out["auctions_per_s"] / out["bare_numpy_auctions_per_s"]
    out["ratio_with_draw"] = out["auctions_with_draw_per_s"] / out["bare_numpy_with_draw_per_s"]
    return out


def _policy(opps) -> Actions:  # type: ignore[no-untyped-def]
    n = opps.t.size
    ch = np.where(opps.offered[:, 1], 1, 2).astype(np.int8)
    return Actions(np.ones(n, dtype=bool), np.full(n, 3_000, dtype=np.int32), (np.arange(n) % 60).astype(np.int16), ch,
                   np.full(n, 4, dtype=np.int8))


def _simulate(cfg: EngineConfig, hours: int, slot_ms: int) -> tuple[int, float, bytes]:
    """Opportunities run, seconds spent in sample + resolve (world construction excluded), outcome digest."""
    e = Engine(load_calibration(), cfg)
    t0, n, h, spent = cfg.start_ms, 0, hashlib.sha256(), 0.0
    a = t0
    while a < t0 + hours * HOUR_MS:
        started = time.perf_counter()
        o = e.sample(0, a, a + slot_ms)
        out, _ = e.resolve(o, _policy(o))
        spent += time.perf_counter() - started
        n += o.t.size
        for col in out:
            h.update(col.tobytes())
        a += slot_ms
    return n, spent, h.digest()


def _engine_rate(cfg: EngineConfig, hours: int, slot_ms: int, repeats: int) -> float:
    runs = [_simulate(cfg, hours, slot_ms) for _ in range(repeats)]
    return statistics.median(n / sec for n, sec, _ in runs)


def bench_engine(repeats: int) -> dict[str, float | bool]:
    train = EngineConfig(persons=100_000, opportunities_per_day=2_000_000, seed=3)
    stream = EngineConfig(persons=5_000, opportunities_per_day=20_000, seed=3)
    out: dict[str, float | bool] = {
        "opportunities_per_s": _engine_rate(train, 4, HOUR_MS, repeats),
        "opportunities_per_s_stream_scale": _engine_rate(stream, 24, DAY_MS // 96, repeats),
    }
    out["same_seed_same_bytes"] = _simulate(stream, 12, DAY_MS // 96)[2] == _simulate(stream, 12, DAY_MS // 96)[2]
    return out


def bench_vector_env(repeats: int) -> dict[str, float]:
    out = {}
    for n in (16, 256):
        venv = GaelpVectorEnv(n, EnvConfig(persons=2_000, opportunities_per_day=20_000))
        venv.reset(seed=0)
        acts = {"bid": np.full((n, 1), 3.0), "creative": np.arange(n) % 60, "channel": np.full(n, 2),
                "target": np.full(n, 4)}
        steps = max(50, 20_000 // n)

        def run(venv: GaelpVectorEnv = venv, acts: dict = acts, steps: int = steps, n: int = n) -> int:
            for _ in range(steps):
                venv.step(acts)
            return steps * n

        out[f"vector_env_{n}_opportunities_per_s"] = _rate(run, repeats)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=200_000, help="auctions per kernel call")
    p.add_argument("--rounds", type=int, default=10, help="kernel calls per timed run")
    args = p.parse_args()
    result: dict[str, object] = {"bench": "sim", "bidders_per_auction": 6}
    a = bench_auctions(args.batch, args.rounds, args.repeats)
    print(f"auctions/s {a['auctions_per_s']:,.0f} vs bare numpy {a['bare_numpy_auctions_per_s']:,.0f} "
          f"(ratio {a['ratio_vs_bare']:.2f}); with bid draws {a['auctions_with_draw_per_s']:,.0f} vs "
          f"{a['bare_numpy_with_draw_per_s']:,.0f} (ratio {a['ratio_with_draw']:.2f})")
    e = bench_engine(max(1, args.repeats // 2))
    print(f"full opportunities/s {e['opportunities_per_s']:,.0f} (training scale), "
          f"{e['opportunities_per_s_stream_scale']:,.0f} (stream scale); same seed same bytes: {e['same_seed_same_bytes']}")
    v = bench_vector_env(max(1, args.repeats // 2))
    print(", ".join(f"{k} {val:,.0f}" for k, val in v.items()))
    result.update({k: round(float(x), 3) if not isinstance(x, bool) else x for k, x in {**a, **e, **v}.items()})
    result["floors"] = {"auctions_per_s>=2e6": a["auctions_per_s"] >= 2e6, "ratio_vs_bare>=0.4": a["ratio_vs_bare"] >= 0.4,
                        "opportunities_per_s>=1e5": e["opportunities_per_s"] >= 1e5}
    result["auctiongym_rounds_per_s_reference"] = 7_400
    print(json.dumps(result))


if __name__ == "__main__":
    main()
