"""What a shadow candidate costs the bid path: bidder p99 at a paced 2,000 requests/s with and
without a candidate (``[serve] candidate_version``) scored beside it on the same machine, in one run.

Two versions are published to a Redis registry (two differently seeded initial policies of the
default agent: 64 creative slots). Bidder processes (``gaelp serve --roles bidder``) run side by
side on one throwaway redis-server and tansu: ``live`` serves the newest version alone; each
``shadow@S`` arm's bidder serves it too, configured with candidate version 1 and ``[serve]
candidate_sample`` S, and beside it runs a ``gaelp serve --roles candidate`` process of the same
configuration: it reads the arm's decision log and decides the share S of it (whole partitions
of it, keyed by decision id) again with version 1, logging the candidate's decisions (never
sent). The bidders never run the candidate (their ``gaelp_candidate_decisions_total`` is reported: it must be 0).
wrk paces each bidder in turn, interleaved over ``--repeat`` rounds (the machine's speed drifts
between minutes); medians reported. Floor (issue 20), at the default sample: shadow p99 ≤ 1.2 ×
live p99. ``candidate_decisions`` is what each candidate process logged by the end (it runs at
background priority and may still be catching up when read: ``--settle`` seconds after the last run).

Where the shadow's CPU goes: during each paced run (calibration probes included) the CPU seconds
of the arm's bidder, its candidate, the other arms' candidates (idle or catching up), tansu,
redis-server and the whole machine (/proc), also per request the bidder answered
(``cpu_us_per_request``); ``shadow_extra_cpu_us_per_request`` is what the arm's bidder, candidate,
tansu and Redis spend per request over the live arm's. Reference contender ``live+spin``: the live
bidder with one SCHED_IDLE busy loop per core (what any background CPU costs the bid path on this
machine). ``--base-tree DIR`` adds ``base:shadow@S`` arms whose bidder and candidate run another
checkout's code (say main's, in a detached worktree), in the same rounds.

Every topic has ``--partitions`` partitions (default ``[topics] partitions``, 4; runs before
2026-12-04's ``shadowpart`` branch had 2).

    .venv/bin/python bench/bench_shadow.py [--rate 2000] [--seconds 10] [--repeat 3] [--base-tree DIR]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ray_training import SALT, _config, _spinners  # noqa: E402
from bench_serve import _cpu_s, _paced, _wait_http, ensure_wrk  # noqa: E402

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
    ap.add_argument("--partitions", type=int, default=GaelpConfig().topics.partitions,
                    help="partitions of every topic (the candidate reads whole ones: a sample is a multiple of 1/this)")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds the candidates may catch up before counting")
    ap.add_argument("--base-tree", type=Path, default=None,
                    help="another checkout (say main's, in a worktree): its bidder + candidate measured as base:shadow@S arms")
    ap.add_argument("--no-spin", action="store_true", help="leave out the reference contender (live + SCHED_IDLE spin)")
    args = ap.parse_args()
    installed = ["wrk"] if ensure_wrk() else []
    cfg = GaelpConfig()
    slots = cfg.creatives.capacity
    work = Path(tempfile.mkdtemp(prefix="gaelp-bench-shadow-"))
    default = cfg.serve.candidate_sample
    samples = args.samples or sorted({default, 1.0})
    arms = {"live": ""} | {f"shadow@{x:g}": f"candidate_version = 1\ncandidate_sample = {x}" for x in samples}
    roots = dict.fromkeys(arms, ROOT)
    if args.base_tree is not None:  # the same arms from another tree, in the same rounds
        for x in samples:
            arms[f"base:shadow@{x:g}"], roots[f"base:shadow@{x:g}"] = arms[f"shadow@{x:g}"], args.base_tree.resolve()
    contenders = [] if args.no_spin else ["live+spin"]  # the live bidder with one SCHED_IDLE busy loop per core
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in [*arms, *contenders]}
    with RedisServer() as redis, TansuBroker() as broker:
        registry = RedisRegistry(redis.url)
        for seed in (0, 1):  # version 1: the candidate; version 2: live
            HybridLearner(spec_of(cfg.hybrid, slots), cfg.hybrid, cfg.reward, registry, seed=seed).publish()
        registry.close()
        env = {**os.environ, "GAELP_KAFKA": broker.bootstrap, "GAELP_REDIS": redis.url, "GAELP_ID_SALT": SALT}
        procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        scorers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            for i, (name, extra) in enumerate(arms.items()):
                config = _config(work, f"sh{os.getpid()}-{i}", extra)  # its own topics and consumer groups
                config.write_text(config.read_text().replace("partitions = 2", f"partitions = {args.partitions}"))
                procs[name] = _serve(config, env, "bidder", roots[name])
                if extra:  # the shadow candidate, in a process of its own beside the bidder
                    scorers[name] = _serve(config, env, "candidate", roots[name])
                _paced(procs[name][1], args.rate, 3, work)  # warm-up
            servers = {"tansu": broker.proc, "redis": redis.proc}
            time.sleep(args.settle)  # the candidates catch up with the warm-ups: count from here
            start = {name: (_cpu_s([proc.pid]), _counter(procs[name][1], "gaelp_bidder_requests_total"))
                     for name, (proc, _) in scorers.items()}
            for _ in range(args.repeat):
                for name in runs:
                    arm = name.removesuffix("+spin")
                    with _spinners(os.cpu_count() or 1) if name in contenders else contextlib.nullcontext():
                        runs[name].append(_measured(arm, procs, scorers, servers, args, work))
            time.sleep(args.settle)
            whole = {name: _cpu_s([proc.pid]) - start[name][0] for name, (proc, _) in scorers.items()}  # to the end
            candidate = {name: _counter(port, "gaelp_candidate_decisions_total") for name, (_, port) in scorers.items()}
            in_bidder = {name: _counter(port, "gaelp_candidate_decisions_total") for name, (_, port) in procs.items()}
            decided = {name: _counter(port, "gaelp_bidder_requests_total") for name, (_, port) in procs.items()}
        finally:
            for proc, _ in [*procs.values(), *scorers.values()]:
                proc.terminate()
                proc.wait(30)
    shutil.rmtree(work, ignore_errors=True)
    p99 = {k: statistics.median(r["p99_us"] for r in v) / 1000 for k, v in runs.items()}
    cpu = {k: {w: round(statistics.median(r["cpu_s"][w] for r in v), 3) for w in v[0]["cpu_s"]} for k, v in runs.items()}
    per_k = {k: round(1000 * whole[k] / (decided[k] - start[k][1]), 4) for k in whole}  # per 1,000 live decisions
    rps = {k: statistics.median(r["rps"] for r in v) for k, v in runs.items()}
    per_req = {k: {w: round(statistics.median(r["cpu_us_per_request"][w] for r in v), 1) for w in v[0]["cpu_s"]}
               for k, v in runs.items()}
    for k in runs:
        print(f"{k:>12} p99 {p99[k]:6.2f} ms at {rps[k]:.0f} req/s"
              + (f" (candidate decisions {candidate[k]:.0f} of {decided[k]:.0f} decided)" if k in candidate else "")
              + "; CPU us/request: " + ", ".join(f"{w} {x:.0f}" for w, x in per_req[k].items()), file=sys.stderr)
    ratio = {k: round(p99[k] / p99["live"], 3) for k in [*candidate, *contenders]}
    own = ("bidder", "candidate", "tansu", "redis")  # what the arm's own processes spend per request, over live's
    over_live = {k: round(sum(per_req[k][w] for w in own) - sum(per_req["live"][w] for w in own), 1) for k in candidate}
    at = f"shadow@{default:g}"  # the floor's arm (absent when --samples leaves the default out)
    print(json.dumps({"bench": "shadow", "arrangement": "candidate role in its own process", "rate": args.rate,
                      "installed": installed, "default_sample": default,
                      "p99_ms": {k: round(v, 3) for k, v in p99.items()}, "rps": {k: round(v, 1) for k, v in rps.items()},
                      "shadow_over_live_p99": ratio, "candidate_decisions": candidate, "bidder_decisions": decided,
                      "candidate_decisions_in_bidders": in_bidder,
                      "cpu_s_per_run": cpu, "cpu_us_per_request": per_req, "shadow_extra_cpu_us_per_request": over_live, "candidate_cpu_s_per_1k_decisions": per_k, "candidate_cpu_s_total": {k: round(v, 2) for k, v in whole.items()},
                      "floor_met_at_default": bool(ratio[at] <= 1.2) if at in ratio else None, "runs": runs}))


def _measured(arm: str, procs: dict[str, tuple[subprocess.Popen[bytes], int]],
              scorers: dict[str, tuple[subprocess.Popen[bytes], int]], servers: dict[str, Any],
              args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One paced run of ``arm``'s bidder, with the CPU seconds each process used meanwhile (probes
    included): the bidder, this arm's candidate, every other arm's (catching up), tansu, redis-server,
    and the whole machine (every process of every user, from /proc/stat)."""
    groups = {"bidder": [procs[arm][0].pid], "candidate": [scorers[arm][0].pid] if arm in scorers else [],
              "other_candidates": [p.pid for k, (p, _) in scorers.items() if k != arm],
              **{k: [p.pid] for k, p in servers.items()}}
    port = procs[arm][1]
    before = {k: _cpu_s(v) for k, v in groups.items()} | {"machine": _machine_s()}
    n0 = _counter(port, "gaelp_bidder_requests_total")
    run: dict[str, Any] = dict(_paced(port, args.rate, args.seconds, work))
    n = _counter(port, "gaelp_bidder_requests_total") - n0
    after = {k: _cpu_s(v) for k, v in groups.items()} | {"machine": _machine_s()}
    run["cpu_s"] = {k: round(after[k] - before[k], 3) for k in before}
    run["cpu_us_per_request"] = {k: round(1e6 * v / max(n, 1), 1) for k, v in run["cpu_s"].items()}
    return run


def _machine_s() -> float:
    """Busy CPU seconds of the whole machine so far (all cores, /proc/stat: everything but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _serve(config: Path, env: dict[str, str], role: str, root: Path = ROOT) -> tuple[subprocess.Popen[bytes], int]:
    """``gaelp serve --roles <role>`` of the tree ``root`` on a port of its own, once it answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "agent_service.cli", "serve", "--config", str(config), "--roles", role],
                            cwd=root, env={**env, "GAELP_HTTP_PORT": str(port), "PYTHONPATH": str(root)},
                            stdout=subprocess.DEVNULL)
    _wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    return proc, port


def _counter(port: int, name: str) -> float:
    """A counter's total (over its labels) from a process's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith((f"{name} ", f"{name}{{")))


if __name__ == "__main__":
    main()
