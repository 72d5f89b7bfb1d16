"""The learning side on Ray: parallel speed-up, learning quality, hot-swap lag, and the bid path's
p99 while the learner trains in another process — each against a baseline measured in the same run.

Sections (``--only`` picks some; all by default):

1. ``speed`` — experience collected and trained per second (simulated decisions per second of
   training wall time, every runner acting and learning) with 1, 2, 4 and 16 env runners on Ray,
   beside the single-process trainer on the same world; Ray's start-up (seconds, resident MB of
   its processes) reported apart. ``speedup_2_vs_1`` = 2 runners ÷ 1 runner.
2. ``quality`` — the agent trained by 16 runners vs the single-process agent on the same simulated
   opportunities (the whole market for ``--quality-days``: one world, or 16 shards of it), each
   evaluated on the validation seeds 0–4 (2 warm-up days, 3 measured; the agent keeps learning, as
   deployed): ``quality_delta_usd`` = 16 runners − single process, mean over seeds, with its
   paired 95 % interval.
3. ``swap`` — two bidder processes (``gaelp serve --roles bidder --registry redis``) on one Redis
   and tansu; 50 versions published; for each, the time from the publish until both bidders
   serve it (``/healthz``): ``hot_swap_p99_s``.
4. ``latency`` — one bidder at a paced 2,000 requests/s (wrk) with the learner (``gaelp learner``,
   a Ray actor) idle, then training at full speed on a topic filled with experience:
   ``bid_p99_ms_learner_idle`` / ``_training`` and their ratio. Between the two, a reference
   contender: one SCHED_IDLE busy loop per core (``bid_p99_ms_spin``) — what any CPU-bound work
   at the learner's priority costs the bid path on this machine, with nothing else of the
   learner's (its Kafka fetches, its memory traffic).

Everything runs on loopback (throwaway redis-server and tansu, tests/servers.py). Last stdout
line: one JSON object.

    .venv/bin/python bench/bench_ray_training.py [--only speed,quality,swap,latency]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from agent_service.threads import limit_math_threads

limit_math_threads()
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on loopback only (adapters/ray_env.py)

from agent_service.config import GaelpConfig
from agent_service.config.lab import TrainConfig
from tests.servers import RedisServer, TansuBroker, free_port

SALT = "bench-salt-0123456789abcdef"


# ------------------------------------------------------------------ 1. speed
def _ray_rss_mb() -> float:
    out = subprocess.run(["ps", "-eo", "rss,args"], capture_output=True, text=True).stdout
    return sum(int(line.split()[0]) for line in out.splitlines()[1:]
               if "ray::" in line or "raylet" in line or "gcs_server" in line or "ray/_private" in line) / 1024


def speed(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    import torch

    from agent_service.adapters.ray_learner import ensure_ray
    from agent_service.evaluation.harness import run_campaign
    from agent_service.evaluation.sim_market import SimMarket
    from agent_service.lab.campaign import HybridCampaign
    from agent_service.lab.parallel import train_parallel

    cfg = GaelpConfig()
    world = {"budget_usd": 15.0, "persons": args.persons, "opportunities_per_day": args.opportunities}
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    market = SimMarket(100, world["budget_usd"], world["persons"], world["opportunities_per_day"], cfg.hybrid.segments)
    agent = HybridCampaign(market.creatives, cfg.hybrid, cfg.reward, seed=100)
    r = run_campaign(market, agent, args.speed_days)
    single_s = time.perf_counter() - t0
    single = sum(d.opportunities for d in r.days) / single_s
    print(f"single process: {single:.0f} decisions/s ({single_s:.0f}s)", file=sys.stderr)

    t0 = time.perf_counter()
    ensure_ray(num_cpus=os.cpu_count())
    start_s = time.perf_counter() - t0
    time.sleep(1.0)
    rss = _ray_rss_mb()
    rates: dict[str, float] = {}
    seconds: dict[str, float] = {}
    startup: dict[str, float] = {}
    for n in args.runners:
        run = train_parallel(cfg, n, args.speed_days, 100, **world, sync_slots=args.sync_slots)
        decisions = sum(rep.decisions for rep in run["reports"])
        rates[str(n)] = decisions / run["train_seconds"]
        seconds[str(n)] = round(run["train_seconds"], 1)
        startup[str(n)] = round(run["runner_startup_seconds"], 1)
        print(f"{n:>2} runners: {rates[str(n)]:.0f} decisions/s ({run['train_seconds']:.0f}s)", file=sys.stderr)
    ray.shutdown()
    return {"single_process_decisions_per_s": round(single, 1),
            "runners_decisions_per_s": {k: round(v, 1) for k, v in rates.items()}, "runner_train_seconds": seconds,
            "runner_startup_seconds": startup,
            "speedup_2_vs_1": round(rates["2"] / rates["1"], 3) if "1" in rates and "2" in rates else None,
            "speedup_vs_single_process": {k: round(v / single, 3) for k, v in rates.items()},
            "ray_start_seconds": round(start_s, 2), "ray_resident_mb": round(rss, 0), "cpus": os.cpu_count(),
            "world": {**world, "days": args.speed_days}}


# ------------------------------------------------------------------ 2. quality
def _evaluate(cfg: GaelpConfig, ck: dict[str, Any], seeds: list[int]) -> list[float]:
    from agent_service.evaluation.harness import run_campaign
    from agent_service.evaluation.sim_market import SimMarket
    from agent_service.lab.campaign import HybridCampaign

    out = []
    for seed in seeds:
        market = SimMarket(seed, 15.0, 5_000, 20_000.0, cfg.hybrid.segments)
        agent = HybridCampaign(market.creatives, cfg.hybrid, cfg.reward, seed=seed)
        agent.restore(ck)
        r = run_campaign(market, agent, 5)
        out.append(sum(d.expected_value_usd for d in r.days[2:]))
    return out


def quality(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from agent_service.lab.evaluate import interval
    from agent_service.lab.train import train

    cfg = GaelpConfig()
    work = Path(tempfile.mkdtemp(prefix="gaelp-bench-ray-"))
    runs: dict[str, dict[str, Any]] = {}
    for name, runners in (("single_process", 0), ("runners_16", 16)):
        tc = TrainConfig(days=args.quality_days, seed=100, runners=runners, baseline_days=0, max_minutes=600,
                         sync_slots=args.sync_slots)
        t0 = time.perf_counter()
        summary = train(cfg, tc, work / name)
        ck = torch.load(work / name / "agent.pt", weights_only=False)
        values = _evaluate(cfg, ck, [0, 1, 2, 3, 4])
        runs[name] = {"train_seconds": summary["wall_seconds"], "decisions": summary["decisions"],
                      "eval_value_usd": [round(v, 2) for v in values], "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{name}: trained {summary['decisions']} decisions in {summary['wall_seconds']:.0f}s, "
              f"eval value {np.mean(values):.1f} USD", file=sys.stderr)
    d = np.array(runs["runners_16"]["eval_value_usd"]) - np.array(runs["single_process"]["eval_value_usd"])
    mean, half = interval(d)
    base = float(np.mean(runs["single_process"]["eval_value_usd"]))
    return {"quality_delta_usd": round(mean, 2), "quality_delta_ci95": round(half, 2),
            "quality_within_interval": bool(abs(mean) <= half or mean >= 0),
            "quality_delta_fraction": round(mean / base, 4) if base else None,
            "quality_days": args.quality_days, "quality_runs": runs}


# ------------------------------------------------------------------ 3 and 4: processes
def _config(workdir: Path, prefix: str, extra: str = "") -> Path:
    path = workdir / f"{prefix}.toml"
    topics = {k: f"{prefix}.{k.replace('_', '-')}" for k in ("bid_requests", "decisions", "auction_results",
                                                             "ad_events", "conversions", "identity_links",
                                                             "experience", "dead_letters", "candidate_decisions")}
    path.write_text(f"""
[budget]
daily_usd = 1000000.0
[topics]
{chr(10).join(f'{k} = "{v}"' for k, v in topics.items())}
partitions = 2
[serve]
group_id = "{prefix}"
session_timeout_s = 2.0
model_dir = "{workdir / 'models'}"
spill_dir = "{workdir / 'spill'}"
campaign = "bench"
registry = "redis"
{extra}
""")
    return path


def _spawn(config: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "agent_service.cli", "serve", "--config", str(config), *args],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _health(port: int) -> dict[str, Any]:
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read())


def swap(args: argparse.Namespace) -> dict[str, Any]:
    from bench_serve import _wait_http

    from agent_service.adapters.redis_registry import RedisRegistry
    from agent_service.agent.learning.learner import HybridLearner
    from agent_service.agent.serving.hybrid import spec_of

    cfg = GaelpConfig()
    work = Path(tempfile.mkdtemp(prefix="gaelp-bench-swap-"))
    lags: list[float] = []
    with RedisServer() as redis, TansuBroker() as broker:
        config = _config(work, f"sw{os.getpid()}")
        registry = RedisRegistry(redis.url)
        learner = HybridLearner(spec_of(cfg.hybrid, 12), cfg.hybrid, cfg.reward, registry, seed=0)
        learner.publish()
        ports = [free_port(), free_port()]
        procs = [_spawn(config, {**os.environ, "GAELP_KAFKA": broker.bootstrap, "GAELP_REDIS": redis.url,
                                 "GAELP_HTTP_PORT": str(p), "GAELP_ID_SALT": SALT}, "--roles", "bidder",
                        "--creatives", "12")  # the layout of the versions published below
                 for p in ports]
        try:
            for p, proc in zip(ports, procs, strict=True):
                _wait_http(f"http://127.0.0.1:{p}/healthz", proc)
            for _ in range(args.publishes):
                state = learner.state()
                t0 = time.perf_counter()
                version = registry.publish(state)
                pending = set(ports)
                while pending:
                    pending = {p for p in pending if _health(p)["model_version"] < version}
                    if time.perf_counter() - t0 > 30:
                        raise TimeoutError(f"version {version} not served after 30 s by {pending}")
                    time.sleep(0.005)
                lags.append(time.perf_counter() - t0)
                time.sleep(args.publish_gap)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(30)
            registry.close()
    arr = np.array(lags)
    return {"hot_swap_p99_s": round(float(np.percentile(arr, 99)), 4),
            "hot_swap_p50_s": round(float(np.percentile(arr, 50)), 4), "hot_swap_max_s": round(float(arr.max()), 4),
            "publishes": len(lags), "bidders": 2}


async def _experience(cfg: GaelpConfig, n: int) -> list[tuple[bytes, bytes]]:
    """``n`` experience records: real ones from the decide path and the outcome handler, then
    copies under new decision ids (so the learner takes each as new) up to ``n``."""
    import msgspec

    from agent_service.contracts.codec import encode
    from agent_service.contracts.events import Experience
    from tests.service.test_learner_service import experience_records

    base = [msgspec.json.decode(v, type=Experience) for v in await experience_records(cfg, 400)]
    out = []
    k = 0
    while len(out) < n:
        for e in base:
            c = msgspec.structs.replace(e, id=f"{e.id}~{k}", decision_id=f"{e.decision_id}~{k}")
            out.append((c.decision_id.encode(), encode(c)))
        k += 1
    return out[:n]


class _spinners:
    """``n`` busy-loop processes on SCHED_IDLE (the learner's policy) for the ``with`` block."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> None:
        code = "import os; os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile True: pass"
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.n)]

    def __exit__(self, *_: object) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def latency(args: argparse.Namespace) -> dict[str, Any]:
    from bench_serve import _paced, _wait_http, ensure_wrk

    ensure_wrk()

    from agent_service.adapters.kafka_bus import KafkaBus

    work = Path(tempfile.mkdtemp(prefix="gaelp-bench-lat-"))
    prefix = f"lt{os.getpid()}"
    out: dict[str, Any] = {}
    with RedisServer() as redis, TansuBroker() as broker:
        config = _config(work, prefix, extra="[learner]\ncheckpoint_every_s = 60.0\n")
        env = {**os.environ, "GAELP_KAFKA": broker.bootstrap, "GAELP_REDIS": redis.url, "GAELP_ID_SALT": SALT}
        port = free_port()
        # 4 creatives: the layout of the experience records (tests.flowkit's decide path)
        bidder = _spawn(config, {**env, "GAELP_HTTP_PORT": str(port)}, "--roles", "bidder", "--creatives", "4")
        learner_port = free_port()
        learner = None
        try:
            _wait_http(f"http://127.0.0.1:{port}/healthz", bidder)
            _paced(port, args.rate, 3, work)  # warm-up
            idle = [_paced(port, args.rate, args.seconds, work) for _ in range(args.repeat)]
            with _spinners(os.cpu_count() or 1):
                spin = [_paced(port, args.rate, args.seconds, work) for _ in range(args.repeat)]
            records = asyncio.run(_experience(GaelpConfig(), args.experience))

            async def fill() -> None:
                bus = KafkaBus(broker.bootstrap)
                await bus.start()
                await bus.create_topics([f"{prefix}.experience"], 2)
                for i in range(0, len(records), 2000):
                    await bus.publish_many(f"{prefix}.experience", records[i:i + 2000])
                await bus.flush()
                await bus.stop()
            asyncio.run(fill())
            learner = _spawn(config, {**env, "GAELP_HTTP_PORT": str(learner_port)}, "--roles", "learner",
                             "--creatives", "4")
            _wait_http(f"http://127.0.0.1:{learner_port}/healthz", learner, timeout=120)

            def trained() -> float:
                text = urllib.request.urlopen(f"http://127.0.0.1:{learner_port}/metrics", timeout=5).read().decode()
                return sum(float(x.split()[-1]) for x in text.splitlines()
                           if x.startswith("gaelp_learner_experience_total "))
            while trained() == 0:
                time.sleep(0.2)
            busy, per_round = [], []
            for _ in range(args.repeat):  # the learner's progress in each round: it must train throughout
                before = trained()
                busy.append(_paced(port, args.rate, args.seconds, work))
                per_round.append(trained() - before)
            during = sum(per_round)
            left = len(records) - trained()
        finally:
            for proc in (bidder, learner):
                if proc is not None:
                    proc.terminate()
                    proc.wait(60)
    p_idle = statistics.median(r["p99_us"] for r in idle) / 1000
    p_busy = statistics.median(r["p99_us"] for r in busy) / 1000
    p_spin = statistics.median(r["p99_us"] for r in spin) / 1000
    out.update({"bid_p99_ms_learner_idle": round(p_idle, 3), "bid_p99_ms_learner_training": round(p_busy, 3),
                "bid_p99_training_over_idle": round(p_busy / p_idle, 3),
                "bid_p99_ms_spin": round(p_spin, 3), "bid_p99_spin_over_idle": round(p_spin / p_idle, 3),
                "paced_rps_idle": round(statistics.median(r["rps"] for r in idle), 1),
                "paced_rps_training": round(statistics.median(r["rps"] for r in busy), 1),
                "experience_trained_during_measurement": during, "experience_trained_per_round": per_round,
                # the ratio means something only if the learner still had experience left when the last round ended
                "experience_left_after_measurement": left, "learner_trained_throughout": left > 0 and min(per_round) > 0,
                "rate": args.rate})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="speed,quality,swap,latency", help="sections to run, comma-separated")
    ap.add_argument("--runners", type=int, nargs="+", default=[1, 2, 4, 16], help="runner counts of the speed run")
    ap.add_argument("--speed-days", type=int, default=3, help="simulated days of each speed run")
    ap.add_argument("--persons", type=int, default=4_000, help="people in the speed runs' world")
    ap.add_argument("--opportunities", type=float, default=8_000.0, help="opportunities per day of the speed runs")
    ap.add_argument("--quality-days", type=int, default=20, help="simulated days of the quality runs")
    ap.add_argument("--sync-slots", type=int, default=TrainConfig.sync_slots,
                    help="budget slots between the runners' meetings (96: once a day)")
    ap.add_argument("--publishes", type=int, default=50, help="versions published in the swap run")
    ap.add_argument("--publish-gap", type=float, default=0.2, help="seconds between publishes")
    ap.add_argument("--rate", type=float, default=2000.0, help="offered requests/s of the latency run")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each paced run")
    ap.add_argument("--repeat", type=int, default=2, help="paced runs per condition (median reported)")
    ap.add_argument("--experience", type=int, default=200_000,
                    help="experience records the learner trains on (enough to keep it busy through every round)")
    args = ap.parse_args()
    result: dict[str, Any] = {"bench": "ray_training"}
    for name in args.only.split(","):
        t0 = time.perf_counter()
        part = {"speed": speed, "quality": quality, "swap": swap, "latency": latency}[name](args)
        result.update(part)
        result[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)
        # each section's figures as soon as it ends: a later section's failure loses nothing
        print(f"[{name} done in {result[f'{name}_seconds']:.0f}s] {json.dumps(part, default=float)}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
