"""What a shadow candidate costs the bid path: bidder p99 at a paced 2,000 requests/s with and
without a candidate (``[serve] candidate_version``) scored beside it on the same machine, in one run.

Two versions are published to a Redis registry (two differently seeded initial policies of the
default agent: 64 creative slots). Bidder processes (``gaelp serve --roles bidder``) run side by
side on one throwaway redis-server and tansu: ``live`` serves the newest version alone; each
``shadow@S`` arm's bidder serves it too, configured with candidate version 1 and ``[serve]
candidate_sample`` S, and beside it runs a ``gaelp serve --roles candidate`` process of the same
configuration: it reads the arm's decision log and decides the share S of it (hashed on request
and imp ids) again with version 1, logging the candidate's decisions (never sent). The bidders
never run the candidate (their ``gaelp_candidate_decisions_total`` is reported: it must be 0).
wrk paces each bidder in turn, interleaved over ``--repeat`` rounds (the machine's speed drifts
between minutes); medians reported. Floor (issue 20), at the default sample: shadow p99 ≤ 1.2 ×
live p99. ``candidate_decisions`` is what each candidate process logged by the end (it runs at
background priority and may still be catching up when read: ``--settle`` seconds after the last run).

    .venv/bin/python bench/bench_shadow.py [--rate 2000] [--seconds 10] [--repeat 3]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ray_training import SALT, _config  # noqa: E402
from bench_serve import _paced, _wait_http, ensure_wrk  # noqa: E402

from agent_service.config import GaelpConfig  # noqa: E402
from tests.servers import RedisServer, TansuBroker, free_port  # noqa: E402


def main() -> None:
    from agent_service.adapters.redis_registry import RedisRegistry
    from agent_service.agent.learning.learner import HybridLearner
    from agent_service.agent.serving.hybrid import spec_of

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=2000.0, help="offered requests/s")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each paced run")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds; medians reported")
    ap.add_argument("--samples", type=float, nargs="+", default=None,
                    help="candidate_sample values to measure (default: the configured default and 1.0)")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds the candidates may catch up before counting")
    args = ap.parse_args()
    installed = ["wrk"] if ensure_wrk() else []
    cfg = GaelpConfig()
    slots = cfg.creatives.capacity
    work = Path(tempfile.mkdtemp(prefix="gaelp-bench-shadow-"))
    default = cfg.serve.candidate_sample
    samples = args.samples or sorted({default, 1.0})
    arms = {"live": ""} | {f"shadow@{x:g}": f"candidate_version = 1\ncandidate_sample = {x}" for x in samples}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
    with RedisServer() as redis, TansuBroker() as broker:
        registry = RedisRegistry(redis.url)
        for seed in (0, 1):  # version 1: the candidate; version 2: live
            HybridLearner(spec_of(cfg.hybrid, slots), cfg.hybrid, cfg.reward, registry, seed=seed).publish()
        registry.close()
        env = {**os.environ, "GAELP_KAFKA": broker.bootstrap, "GAELP_REDIS": redis.url, "GAELP_ID_SALT": SALT}
        procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        scorers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            for k, (name, extra) in enumerate(arms.items()):
                config = _config(work, f"sh{os.getpid()}-{k}", extra)  # its own topics and consumer groups
                procs[name] = _serve(config, env, "bidder")
                if extra:  # the shadow candidate, in a process of its own beside the bidder
                    scorers[name] = _serve(config, env, "candidate")
                _paced(procs[name][1], args.rate, 3, work)  # warm-up
            for _ in range(args.repeat):
                for name, (_, port) in procs.items():
                    runs[name].append(_paced(port, args.rate, args.seconds, work))
            time.sleep(args.settle)
            candidate = {name: _counter(port, "gaelp_candidate_decisions_total") for name, (_, port) in scorers.items()}
            in_bidder = {name: _counter(port, "gaelp_candidate_decisions_total") for name, (_, port) in procs.items()}
            decided = {name: _counter(port, "gaelp_bidder_requests_total") for name, (_, port) in procs.items()}
        finally:
            for proc, _ in [*procs.values(), *scorers.values()]:
                proc.terminate()
                proc.wait(30)
    shutil.rmtree(work, ignore_errors=True)
    p99 = {k: statistics.median(r["p99_us"] for r in v) / 1000 for k, v in runs.items()}
    rps = {k: statistics.median(r["rps"] for r in v) for k, v in runs.items()}
    for k in runs:
        print(f"{k:>12} p99 {p99[k]:6.2f} ms at {rps[k]:.0f} req/s"
              + (f" (candidate decisions {candidate[k]:.0f} of {decided[k]:.0f} decided)" if k in candidate else ""),
              file=sys.stderr)
    ratio = {k: round(p99[k] / p99["live"], 3) for k in candidate}
    at = f"shadow@{default:g}"  # the floor's arm (absent when --samples leaves the default out)
    print(json.dumps({"bench": "shadow", "arrangement": "candidate role in its own process", "rate": args.rate,
                      "installed": installed, "default_sample": default,
                      "p99_ms": {k: round(v, 3) for k, v in p99.items()}, "rps": {k: round(v, 1) for k, v in rps.items()},
                      "shadow_over_live_p99": ratio, "candidate_decisions": candidate, "bidder_decisions": decided,
                      "candidate_decisions_in_bidders": in_bidder,
                      "floor_met_at_default": bool(ratio[at] <= 1.2) if at in ratio else None, "runs": runs}))


def _serve(config: Path, env: dict[str, str], role: str) -> tuple[subprocess.Popen[bytes], int]:
    """``gaelp serve --roles <role>`` on a port of its own, once it answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "agent_service.cli", "serve", "--config", str(config), "--roles", role],
                            cwd=ROOT, env={**env, "GAELP_HTTP_PORT": str(port)}, stdout=subprocess.DEVNULL)
    _wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    return proc, port


def _counter(port: int, name: str) -> float:
    """A counter's total (over its labels) from a process's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith((f"{name} ", f"{name}{{")))


if __name__ == "__main__":
    main()
