"""Bid endpoint latency at a sustained rate vs the bare aiohttp ceiling, measured in one run.

Needs ``wrk`` (Debian package; this script installs it with apt-get when missing and says so).
Everything runs on loopback: a throwaway redis-server and tansu broker (tests/servers.py),
``gaelp serve`` in its own process (Redis state, model inference, decision log to Kafka; the
warehouse sink is off, as in the compose deployment where ``gaelp warehouse`` runs apart), and
a bare aiohttp app (parse the request with the same decoder, fixed response, no state, no
model; on the service's event loop) in another. wrk drives each:

Both servers stay up while ``--repeat`` interleaved rounds run (default 3; the machine's speed
drifts between minutes), each round:

1. bare ceiling: closed loop, ``-c 32``, as fast as it answers;
2. the service at a paced rate (default 2,000 requests/s): each of ``C`` connections waits
   ``C/rate`` minus the measured mean latency between requests (wrk's ``delay()``), so the
   offered load is the target rate; p50/p99/p99.9 come from wrk's latency histogram;
3. the service's own ceiling: closed loop, like 1.

Prints a table of medians and, as the last line, one JSON object (every round included).

    .venv/bin/python bench/bench_serve.py [--rate 2000] [--seconds 10] [--repeat 3]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import json
import re
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

from agent_service.config import GaelpConfig
from tests.servers import RedisServer, TansuBroker, free_port

_LUA = r"""
local counter = 0
local devices = %(devices)d
math.randomseed(%(seed)d)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-openrtb-version"] = "2.6"
function request()
  counter = counter + 1
  local dev = math.random(devices)
  local body = '{"id":"b%(seed)d-' .. counter .. '","at":2,"tmax":120,"cur":["USD"],' ..
    '"imp":[{"id":"1","bidfloor":0.5,"bidfloorcur":"USD","banner":{"w":300,"h":250}}],' ..
    '"site":{"id":"s1","domain":"example.com","cat":["IAB1"],"page":"https://example.com/a"},' ..
    '"device":{"ifa":"dev-' .. dev .. '","devicetype":4,"ua":"Mozilla/5.0","ip":"192.0.2.1"},' ..
    '"user":{"id":"u' .. dev .. '"}}'
  return wrk.format(nil, "/openrtb2/bid", nil, body)
end
%(delay)s
done = function(summary, latency, requests)
  local codes = 0
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,' ..
    '"p999_us":%%d,"max_us":%%d,"mean_us":%%f,"errors_status":%%d,"errors_timeout":%%d,"errors_connect":%%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean,
    summary.errors.status, summary.errors.timeout, summary.errors.connect))
end
"""


def _wrk(port: int, seconds: float, connections: int, delay_ms: float | None, workdir: Path) -> dict[str, float]:
    delay = f"function delay() return {delay_ms:.3f} end" if delay_ms is not None else ""
    script = workdir / f"wrk-{time.monotonic_ns()}.lua"
    # A fresh seed per run: request ids never repeat across runs (a repeat would reuse its stored decision).
    script.write_text(_LUA % {"devices": 20_000, "seed": time.monotonic_ns() % 2_000_000_000, "delay": delay})
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(round(seconds))}s", "--timeout", "2s", "-s", str(script),
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"WRKJSON (\{.*\})", out.stdout)
    if m is None:
        raise RuntimeError(f"wrk said: {out.stdout}\n{out.stderr}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    # Non-2xx answers: wrk counts 204 as success; status errors are >= 400.
    return r


def _bare_server(port: int) -> None:
    """A bare aiohttp app: parse the request like the service does, answer a fixed response."""
    from aiohttp import web

    from agent_service.contracts.codec import decode_bid_request
    from agent_service.errors import DecodeError

    fixed = json.dumps({"id": "x", "seatbid": [{"bid": [{"id": "1", "impid": "1", "price": 1.0}]}],
                        "cur": "USD"}).encode()

    async def bid(request: web.Request) -> web.Response:
        try:
            decode_bid_request(await request.read())
        except DecodeError as exc:
            return web.json_response({"field": exc.field}, status=400)
        return web.Response(body=fixed, content_type="application/json")

    app = web.Application()
    app.router.add_post("/openrtb2/bid", bid)
    loop = None
    if GaelpConfig().serve.event_loop == "uvloop":  # the service's event loop: a like-for-like ceiling
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


def _paced(port: int, rate: float, seconds: float, workdir: Path, connections: int = 32) -> dict[str, float]:
    """Offer ``rate`` requests/s: each connection waits ``delay`` between answer and next request,
    so rate = C / (delay + mean latency); calibrate ``delay`` on short probes, then measure."""
    period_ms = 1000 * connections / rate
    delay = period_ms
    for _ in range(4):
        probe = _wrk(port, 3, connections, delay, workdir)
        cycle_ms = 1000 * connections / probe["rps"]  # delay + everything else per request
        delay = max(0.0, period_ms - (cycle_ms - delay))
        if abs(probe["rps"] - rate) < 0.03 * rate:
            break
    result = _wrk(port, seconds, connections, delay, workdir)
    result["connections"] = connections
    result["delay_ms"] = delay
    return result


def _service_metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("gaelp_bidder_requests_total", "gaelp_bidder_bids_total", "gaelp_bidder_model_version",
                     "gaelp_errors_total"):
            if line.startswith(name) and not line.startswith(name + "_created"):
                out[line.split(" ")[0]] = float(line.split(" ")[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=2000.0, help="offered requests/s for the latency run")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each measured run")
    ap.add_argument("--connections", type=int, default=32, help="connections of the paced run (an exchange's pool)")
    ap.add_argument("--serve-option", action="append", default=[], metavar="KEY=VALUE",
                    help="extra [serve] setting for the service (e.g. max_passes=1), to compare settings")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds (bare, paced, closed); medians reported")
    ap.add_argument("--bare-server", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_server is not None:
        _bare_server(args.bare_server)
        return
    installed = []
    if shutil.which("wrk") is None:
        print("bench_serve: installing wrk (apt-get install wrk)", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
        installed.append("wrk")
    workdir = Path(tempfile.mkdtemp(prefix="gaelp-bench-serve-"))
    prefix = f"bench{os.getpid()}"
    config = workdir / "gaelp.toml"
    extra = "\n".join(args.serve_option)
    config.write_text(f"""
[budget]
daily_usd = 1000000.0

[topics]
bid_requests = "{prefix}.bid-requests"
decisions = "{prefix}.decisions"
auction_results = "{prefix}.auction-results"
ad_events = "{prefix}.ad-events"
conversions = "{prefix}.conversions"
identity_links = "{prefix}.identity-links"
experience = "{prefix}.experience"
dead_letters = "{prefix}.dead-letters"
partitions = 2

[serve]
group_id = "{prefix}"
session_timeout_s = 2.0
model_dir = "{workdir / 'models'}"
spill_dir = "{workdir / 'spill'}"
campaign = "bench"
{extra}
""")
    results: dict[str, object] = {"installed": installed, "serve_options": args.serve_option}
    rounds: list[dict[str, dict[str, float]]] = []
    with RedisServer() as redis, TansuBroker() as broker:
        bare_port, port = free_port(), free_port()
        bare = subprocess.Popen([sys.executable, __file__, "--bare-server", str(bare_port)], cwd=ROOT)
        env = {**os.environ, "GAELP_KAFKA": broker.bootstrap, "GAELP_REDIS": redis.url,
               "GAELP_HTTP_PORT": str(port), "GAELP_ID_SALT": "bench-salt-0123456789abcdef"}
        proc = subprocess.Popen([sys.executable, "-m", "agent_service.cli", "serve", "--config", str(config),
                                 "--no-learner", "--warehouse", "off"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        try:
            _wait_http(f"http://127.0.0.1:{port}/healthz", proc)
            _wrk(bare_port, 2, 32, None, workdir)  # warm-up
            _wrk(port, 3, 20, None, workdir)  # warm-up (JIT of the scripts, pools, topics)
            # Interleaved rounds: this machine's speed drifts by tens of percent between minutes,
            # so each round measures the baseline next to the service and medians are reported.
            for _ in range(args.repeat):
                rounds.append({
                    "bare": _wrk(bare_port, args.seconds, 32, None, workdir),
                    "paced": _paced(port, args.rate, args.seconds, workdir, connections=args.connections),
                    "closed": _wrk(port, args.seconds, 32, None, workdir),
                })
            results["service_metrics"] = _service_metrics(port)
        finally:
            for p in (proc, bare):
                p.terminate()
                p.wait(30)
    shutil.rmtree(workdir, ignore_errors=True)

    def median(run: str, key: str) -> float:
        return float(statistics.median(r[run][key] for r in rounds))

    row = "{:<34} {:>9} {:>9} {:>9} {:>9}"
    print(row.format("run (median of rounds)", "req/s", "p50 ms", "p99 ms", "p99.9 ms"))
    for name, run in (("bare aiohttp ceiling (c=32)", "bare"), (f"service paced at {args.rate:.0f}/s", "paced"),
                      ("service closed loop (c=32)", "closed")):
        print(row.format(name, f"{median(run, 'rps'):.0f}", f"{median(run, 'p50_us') / 1000:.2f}",
                         f"{median(run, 'p99_us') / 1000:.2f}", f"{median(run, 'p999_us') / 1000:.2f}"))
    keys = {"bare": ("rps", "p50_us", "p99_us", "p999_us"),
            "paced": ("rps", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "errors_status", "errors_timeout",
                      "connections", "delay_ms"),
            "closed": ("rps", "p50_us", "p99_us", "p999_us", "errors_status")}
    paced_p99 = median("paced", "p99_us")
    results.update({
        "bench": "serve",
        "target_rps": args.rate,
        "rounds": [{run: {k: r[run][k] for k in keys[run]} for run in keys} for r in rounds],
        "paced": {k: median("paced", k) for k in keys["paced"]},
        "bare_ceiling": {k: median("bare", k) for k in keys["bare"]},
        "service_ceiling": {k: median("closed", k) for k in keys["closed"]},
        "paced_p99_ms": paced_p99 / 1000,
        "paced_p50_ms": median("paced", "p50_us") / 1000,
        "floor_met": paced_p99 <= 10_000 and median("paced", "rps") >= 0.95 * args.rate,
        "paced_fraction_of_bare_ceiling": median("paced", "rps") / median("bare", "rps"),
        # per round, then the median: the ratio is what carries over between machines
        "service_ceiling_fraction_of_bare": float(statistics.median(r["closed"]["rps"] / r["bare"]["rps"]
                                                                    for r in rounds)),
    })
    print(json.dumps(results))


if __name__ == "__main__":
    main()
