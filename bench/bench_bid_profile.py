"""Where a bid request's time goes, piece by piece: a sampling profile of the bid path.

A bidder process (``gaelp serve --roles bidder``, Redis state, model inference, decision log to
Kafka; throwaway redis-server and tansu on loopback) is driven by wrk with distinct devices,
sites and IPs and a budget large enough to bid all along, while py-spy samples it (1,000 Hz,
idle time included). Every sample is charged to the first piece of the bid path found on its
stack:

  parse           decode_bid_request (JSON → OpenRTB structs, validation)
  redis read      decide_contexts (identity, journey, budget, stored decision: one round trip)
  state build     build_states and the segment posterior (what the agent sees)
  model           the networks and sampling (HybridAgent.act: journey code, heads, v̂, bid)
  decide rest     Decider.decide's own work (slots, drafts, pricing, counting)
  redis write     reserve_and_put (reservations and decisions: one round trip)
  encode          the BidResponse and the decision-log records (msgspec)
  decision log    publishing the decisions to Kafka (aiokafka producer)
  http            aiohttp: reading the request, writing the response
  event loop      uvloop/asyncio scheduling and socket waits not in the above
  other           everything else (metrics, gauges, the model watcher)

CPU per request of each piece = its samples ÷ rate ÷ requests served. Prints the table (µs
per request and share of the bidder's busy time) and, last, one JSON object. Runs twice: one
connection (latency) and 32 (throughput); the share of requests that bid is printed beside.

    .venv/bin/python bench/bench_bid_profile.py [--seconds 10]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_serve import _batch_mean, _service_metrics, _wait_http, _wrk, ensure_wrk  # noqa: E402

from tests.servers import RedisServer, TansuBroker, free_port  # noqa: E402

PIECES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("parse", ("decode_bid_request",)),
    ("redis read", ("decide_contexts",)),
    ("redis write", ("reserve_and_put", "_reserve_and_store")),
    ("state build", ("build_states", "segments.py", "counts_matrix")),
    ("model", ("HybridAgent.act", "serve_np", "encode_np", "begin_slot")),
    ("encode", ("Decider._response", "encoded_state", "codec.py")),  # not aiohttp's finish_response
    ("decision log", ("_publish_log", "_drain_log", "publish_many", "aiokafka")),
    ("decide rest", ("Decider.decide", "act_batch")),
    ("http", ("aiohttp",)),
)


def _piece(stack: str) -> str:
    frames = stack.split(";")
    for name, keys in PIECES:
        if any(k in f for f in frames for k in keys):
            return name
    if any("uvloop" in f or "asyncio" in f or "Runner.run" in f for f in frames):
        return "event loop"
    return "other"


def _py_spy() -> str:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("py-spy not found: `pip install -e '.[bench]'` (py-spy, pinned in pyproject.toml) and run again")
    return found


def _profile(port: int, pid: int, seconds: float, connections: int, work: Path) -> dict[str, object]:
    out = work / f"prof-{connections}.txt"
    spy = subprocess.Popen([_py_spy(), "record",
                            "--pid", str(pid), "--rate", "1000", "--duration", str(int(seconds)), "--format", "raw",
                            "--output", str(out), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = _service_metrics(port)
    run = _wrk(port, seconds, connections, None, work)
    spy.wait(seconds + 60)
    after = _service_metrics(port)
    requests = after.get("gaelp_bidder_requests_total", 0) - before.get("gaelp_bidder_requests_total", 0)
    bids = sum(v for k, v in after.items() if k.startswith("gaelp_bidder_bids_total")) - \
        sum(v for k, v in before.items() if k.startswith("gaelp_bidder_bids_total"))
    counts: collections.Counter[str] = collections.Counter()
    idle = 0
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "MainThread" not in stack.split(";")[0] and "Thread" in stack.split(";")[0]:
            continue  # other threads (the model watcher's loads, Kafka's)
        if stack.endswith(("select (selectors.py", "poll", "epoll_wait")) or "_run_once" in stack.split(";")[-1]:
            idle += int(n)
        counts[_piece(stack)] += int(n)
    busy = sum(counts.values())
    per_req = {k: round(v / 1000 / max(requests, 1) * 1e6, 1) for k, v in counts.most_common()}
    return {"connections": connections, "requests": requests, "bid_share": round(bids / max(requests, 1), 3),
            "batch_mean": _batch_mean(before, after), "rps": round(run["rps"], 1), "p50_ms": run["p50_us"] / 1000, "p99_ms": run["p99_us"] / 1000,
            "us_per_request": per_req, "share": {k: round(v / max(busy, 1), 3) for k, v in counts.items()},
            "samples": busy}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    ensure_wrk()  # as bench_serve.py: apt-get install wrk when missing
    work = Path(tempfile.mkdtemp(prefix="gaelp-bench-profile-"))
    prefix = f"bp{os.getpid()}"
    (work / "gaelp.toml").write_text(f"""
[budget]
daily_usd = 1000000.0
pacing_slack = 1.0
[topics]
{chr(10).join(f'{k} = "{prefix}.{k}"' for k in ("bid_requests", "decisions", "auction_results", "ad_events",
                                                 "conversions", "identity_links", "experience", "dead_letters"))}
partitions = 2
[serve]
group_id = "{prefix}"
session_timeout_s = 2.0
model_dir = "{work / 'models'}"
spill_dir = "{work / 'spill'}"
campaign = "bench"
""")
    results = []
    with RedisServer() as redis, TansuBroker() as broker:
        port = free_port()
        env = {**os.environ, "GAELP_KAFKA": broker.bootstrap, "GAELP_REDIS": redis.url, "GAELP_HTTP_PORT": str(port),
               "GAELP_ID_SALT": "bench-salt-0123456789abcdef"}
        proc = subprocess.Popen([sys.executable, "-m", "agent_service.cli", "serve", "--config", str(work / "gaelp.toml"),
                                 "--roles", "bidder"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        try:
            _wait_http(f"http://127.0.0.1:{port}/healthz", proc)
            _wrk(port, 3, 8, None, work)  # warm-up
            for c in (1, 32):
                results.append(_profile(port, proc.pid, args.seconds, c, work))
        finally:
            proc.terminate()
            proc.wait(30)
    names = [n for n, _ in PIECES] + ["event loop", "other"]
    print(f"{'piece':<14}" + "".join(f"{'c=' + str(r['connections']) + ' µs/req':>16}{'share':>8}" for r in results))
    for n in names:
        print(f"{n:<14}" + "".join(f"{r['us_per_request'].get(n, 0.0):>16.1f}{r['share'].get(n, 0.0):>8.1%}"  # type: ignore[union-attr]
                                   for r in results))
    for r in results:
        print(f"c={r['connections']}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
              f"{r['bid_share']:.0%} of requests bid, {r['batch_mean']:.1f} requests per pass")
    print(json.dumps({"bench": "bid_profile", "runs": results}))
    urllib.request.urlcleanup()


if __name__ == "__main__":
    main()
