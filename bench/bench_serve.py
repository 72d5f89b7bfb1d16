"""Bid endpoint latency and throughput vs the bare aiohttp ceiling, measured in one run.

Needs ``wrk`` (Debian package; this script installs it with apt-get when missing and says so).
Everything runs on loopback: a throwaway redis-server and tansu broker (tests/servers.py),
``gaelp serve`` in its own process (Redis state, model inference, decision log to Kafka; the
warehouse sink is off, as in the compose deployment where ``gaelp warehouse`` runs apart), and
a bare aiohttp app (parse the request with the same decoder, fixed response, no state, no
model; on the service's event loop) in another. wrk drives each:

Both servers stay up while ``--repeat`` interleaved rounds run (default 3; the machine's speed
drifts between minutes), each round:

1. bare ceiling: closed loop, ``-c 32``, as fast as it answers;
2. the service, one connection (an exchange's single stream: the latency floor, p99 <= 5 ms);
3. the service at a paced rate (default 2,000 requests/s): each of ``C`` connections waits
   ``C/rate`` minus the measured mean latency between requests (wrk's ``delay()``), so the
   offered load is the target rate; p50/p99/p99.9 from wrk's latency histogram;
4. the service's own ceiling: closed loop, like 1.

Then the same service as two bidder processes (``--workers 2``, SO_REUSEPORT, one budget in
Redis), closed loop: together vs one process's ceiling. The budget is large and the pacing rail
off, so every figure is for requests that really bid: the share that bid is printed, from the
service's own counters. CPU seconds of each bidder process, Redis, tansu and wrk during each
closed-loop run are reported, and per request served (they share the machine's 2 cores: where
the cores went decides what a second bidder can add), with each worker's share of the requests,
its batch size and its own CPU per request it served; and the machine's busy, outside (busy minus
the bench's parties: other load) and steal cores from /proc/stat (whether the two cores were full), and the event loop's lag (how late a 10 ms timer fired: what held the loop)
from gaelp_event_loop_lag_seconds.

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
import resource
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

from agent_service.config import GaelpConfig
from tests.servers import RedisServer, TansuBroker, free_port, free_ports

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
    '"site":{"id":"s' .. (dev %% 97) .. '","domain":"site' .. (dev %% 97) .. '.example","cat":["IAB' ..
    (dev %% 20 + 1) .. '"],"page":"https://site' .. (dev %% 97) .. '.example/a"},' ..
    '"device":{"ifa":"dev-' .. dev .. '","devicetype":' .. (dev %% 3 + 2) .. ',"ua":"Mozilla/5.0","ip":"198.51.' ..
    (dev %% 200) .. '.' .. (dev %% 250 + 1) .. '"},' ..
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
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(round(seconds))}s", "--timeout", "2s", "-s", str(script),
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"WRKJSON (\{.*\})", out.stdout)
    if m is None:
        raise RuntimeError(f"wrk said: {out.stdout}\n{out.stderr}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child reaped in between
    r["wrk_cpu_s"] = round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 2)
    # Non-2xx answers: wrk counts 204 as success; status errors are >= 400.
    return r


def ensure_wrk() -> bool:
    """Install wrk (Debian package) when missing; True if it was installed now."""
    if shutil.which("wrk") is not None:
        return False
    print("bench: installing wrk (apt-get install wrk)", file=sys.stderr)
    if subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)  # a fresh machine's lists
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    return True


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
                     "gaelp_errors_total", "gaelp_event_loop_lag_seconds_bucket", "gaelp_event_loop_lag_seconds_count",
                     "gaelp_bidder_batch_requests_sum", "gaelp_bidder_batch_requests_count"):
            if line.startswith(name) and not line.startswith(name + "_created"):
                out[line.split(" ")[0]] = float(line.split(" ")[-1])
    return out


def _wait_port(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def _bids(m: dict[str, float]) -> tuple[float, float]:
    """(requests, bids) from the service's counters."""
    return (m.get("gaelp_bidder_requests_total", 0.0),
            sum(v for k, v in m.items() if k.startswith("gaelp_bidder_bids_total")))


def _batch_mean(before: dict[str, float], after: dict[str, float]) -> float:
    """Mean requests per decided pass between two scrapes (how much batching the load reached)."""
    n = after.get("gaelp_bidder_batch_requests_count", 0.0) - before.get("gaelp_bidder_batch_requests_count", 0.0)
    total = after.get("gaelp_bidder_batch_requests_sum", 0.0) - before.get("gaelp_bidder_batch_requests_sum", 0.0)
    return round(total / n, 2) if n > 0 else 0.0


def _loop_lag(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Share of the loop's 10 ms timers late by more than 1 ms and 5 ms, between two scrapes."""
    def bucket(m: dict[str, float], le: str) -> float:
        return next((v for k, v in m.items() if k.startswith("gaelp_event_loop_lag_seconds_bucket") and f'le="{le}"' in k),
                    0.0)
    n = after.get("gaelp_event_loop_lag_seconds_count", 0.0) - before.get("gaelp_event_loop_lag_seconds_count", 0.0)
    if n <= 0:
        return {}
    return {"timers": n, "late_over_1ms": round(1 - (bucket(after, "0.001") - bucket(before, "0.001")) / n, 4),
            "late_over_5ms": round(1 - (bucket(after, "0.005") - bucket(before, "0.005")) / n, 4)}


def _processes(pids: list[int]) -> list[int]:
    """The bidder processes: each given process's workers (``--workers N`` spawns them; not
    multiprocessing's resource tracker), or the process itself."""
    out: list[int] = []
    for pid in pids:
        kids = [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
        kids = [k for k in kids if b"resource_tracker" not in Path(f"/proc/{k}/cmdline").read_bytes()]
        out += kids or [pid]
    return out


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of the processes and their children (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    seen = set(pids)
    for pid in list(pids):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split() if Path(f"/proc/{pid}").exists() else []:
            seen.add(int(child))
    for pid in seen:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(f[11]) + int(f[12])) / tick
    return total


def _machine_ticks() -> list[int]:
    """The machine's CPU ticks from /proc/stat: user, nice, system, idle, iowait, irq, softirq, steal."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def _machine_cores(t0: list[int], t1: list[int], seconds: float, parties_s: float) -> dict[str, float]:
    """Cores in use between two /proc/stat reads: busy (all but idle and iowait; steal counts, as the
    hypervisor took the core), outside (busy minus the bench's parties) and steal."""
    d = [b - a for a, b in zip(t0, t1, strict=True)]
    tick = os.sysconf("SC_CLK_TCK")
    busy = (sum(d) - d[3] - d[4]) / tick / seconds
    return {"busy": round(busy, 2), "outside": round(busy - parties_s / seconds, 2), "steal": round(d[7] / tick / seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=2000.0, help="offered requests/s for the latency run")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each measured run")
    ap.add_argument("--connections", type=int, default=32, help="connections of the paced run (an exchange's pool)")
    ap.add_argument("--serve-option", action="append", default=[], metavar="KEY=VALUE",
                    help="extra [serve] setting for the service (e.g. max_passes=1), to compare settings")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds; medians reported")
    ap.add_argument("--bare-server", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_server is not None:
        _bare_server(args.bare_server)
        return
    installed = ["wrk"] if ensure_wrk() else []
    workdir = Path(tempfile.mkdtemp(prefix="gaelp-bench-serve-"))
    prefix = f"bench{os.getpid()}"
    config = workdir / "gaelp.toml"
    extra = "\n".join(args.serve_option)
    topics = "\n".join(f'{k} = "{prefix}.{k.replace("_", "-")}"' for k in (
        "bid_requests", "decisions", "auction_results", "ad_events", "conversions", "identity_links", "experience",
        "dead_letters"))
    config.write_text(f"""
[budget]
daily_usd = 1000000.0
pacing_slack = 1.0

[topics]
{topics}
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
    rounds: list[dict[str, dict[str, Any]]] = []
    with RedisServer() as redis, TansuBroker() as broker:
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, __file__, "--bare-server", str(bare_port)], cwd=ROOT)
        env = {**os.environ, "GAELP_KAFKA": broker.bootstrap, "GAELP_REDIS": redis.url,
               "GAELP_ID_SALT": "bench-salt-0123456789abcdef"}

        def start(workers: int) -> tuple[subprocess.Popen[bytes], int]:
            port = free_ports(workers + 1 if workers > 1 else 1)  # worker k's metrics on port + 1 + k
            proc = subprocess.Popen([sys.executable, "-m", "agent_service.cli", "serve", "--config", str(config),
                                     "--roles", "bidder", "--workers", str(workers)], cwd=ROOT,
                                    env={**env, "GAELP_HTTP_PORT": str(port)}, stdout=subprocess.DEVNULL)
            for k in range(workers):  # every worker's own metrics port answers once it serves
                _wait_http(f"http://127.0.0.1:{port + 1 + k if workers > 1 else port}/healthz", proc)
            return proc, port

        def closed(port: int, pids: list[int], metrics_ports: list[int] | None = None) -> dict[str, Any]:
            """Closed loop at c=32; CPU seconds of each party (each bidder process apart), and with
            ``metrics_ports`` each worker's share of the requests and its batch size."""
            procs = _processes(pids)

            def cpu() -> dict[str, float]:
                return {"service": _cpu_s(pids), "redis": _cpu_s([redis.proc.pid]), "tansu": _cpu_s([broker.proc.pid]),
                        **{f"bidder_{k}": _cpu_s([q]) for k, q in enumerate(procs)}}

            cpu0 = cpu()
            m0 = [_service_metrics(q) for q in metrics_ports or []]
            ticks0, t0 = _machine_ticks(), time.monotonic()
            run: dict[str, Any] = dict(_wrk(port, args.seconds, 32, None, workdir))
            ticks1, t1 = _machine_ticks(), time.monotonic()
            cpu1 = cpu()
            run["cpu_s"] = {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0} | {"wrk": run.pop("wrk_cpu_s")}
            parties = sum(v for k, v in run["cpu_s"].items() if not k.startswith("bidder_"))  # service = the bidders
            run["machine_cores"] = _machine_cores(ticks0, ticks1, t1 - t0, parties)
            if metrics_ports:
                m1 = [_service_metrics(q) for q in metrics_ports]
                run["worker_requests"] = [_bids(b)[0] - _bids(a)[0] for a, b in zip(m0, m1, strict=True)]
                run["worker_batch_mean"] = [_batch_mean(a, b) for a, b in zip(m0, m1, strict=True)]
                run["worker_cpu_us_per_own_request"] = [  # the bidder's cost at its own batch size
                    round(run["cpu_s"][f"bidder_{k}"] * 1e6 / max(n, 1), 1) for k, n in enumerate(run["worker_requests"])]
            return run

        def measured(port: int, run_fn) -> dict[str, float]:  # type: ignore[no-untyped-def]
            before = _service_metrics(port)
            run = run_fn()
            after = _service_metrics(port)
            (r0, b0), (r1, b1) = _bids(before), _bids(after)
            run["bid_share"] = round((b1 - b0) / max(r1 - r0, 1), 4)
            run["loop_lag"] = _loop_lag(before, after)
            run["batch_mean"] = _batch_mean(before, after)
            return run

        proc, port = start(1)
        try:
            _wait_port(bare_port)
            _wrk(bare_port, 2, 32, None, workdir)  # warm-up
            _wrk(port, 3, 20, None, workdir)  # warm-up (JIT of the scripts, pools, topics)
            for _ in range(args.repeat):
                rounds.append({
                    "bare": _wrk(bare_port, args.seconds, 32, None, workdir),
                    "one_connection": measured(port, lambda: _wrk(port, args.seconds, 1, None, workdir)),
                    "paced": measured(port, lambda: _paced(port, args.rate, args.seconds, workdir,
                                                           connections=args.connections)),
                    "closed": measured(port, lambda: closed(port, [proc.pid])),
                })
            results["service_metrics"] = _service_metrics(port)
        finally:
            proc.terminate()
            proc.wait(30)
        two, port2 = start(2)
        try:
            _wrk(port2, 3, 20, None, workdir)
            for r in rounds:
                r["two_workers"] = closed(port2, [two.pid], [port2 + 1, port2 + 2])
        finally:
            two.terminate()
            two.wait(60)
            bare.terminate()
            bare.wait(30)
    shutil.rmtree(workdir, ignore_errors=True)

    def median(run: str, key: str) -> float:
        return float(statistics.median(float(r[run][key]) for r in rounds))

    row = "{:<36} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}"
    print(row.format("run (median of rounds)", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "bids", "batch"))
    for name, run in (("bare aiohttp ceiling (c=32)", "bare"), ("service, one connection", "one_connection"),
                      (f"service paced at {args.rate:.0f}/s", "paced"), ("service closed loop (c=32)", "closed"),
                      ("two bidder processes (c=32)", "two_workers")):
        share = f"{median(run, 'bid_share'):.0%}" if "bid_share" in rounds[0][run] else ""
        batch = f"{median(run, 'batch_mean'):.1f}" if "batch_mean" in rounds[0][run] else ""
        print(row.format(name, f"{median(run, 'rps'):.0f}", f"{median(run, 'p50_us') / 1000:.2f}",
                         f"{median(run, 'p99_us') / 1000:.2f}", f"{median(run, 'p999_us') / 1000:.2f}", share, batch))
    for run in ("closed", "two_workers"):  # where the two cores went, per request served
        cpu = {k: statistics.median(r[run]["cpu_s"][k] * 1e6 / r[run]["requests"] for r in rounds)
               for k in rounds[0][run]["cpu_s"]}
        print(f"CPU µs per request, {run}: " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items()))
        results[f"{run}_cpu_us_per_request"] = {k: round(v, 1) for k, v in cpu.items()}
        cores = {k: statistics.median(r[run]["machine_cores"][k] for r in rounds) for k in ("busy", "outside", "steal")}
        extra = ""
        if run == "two_workers":
            own = [statistics.median(r[run]["worker_cpu_us_per_own_request"][k] for r in rounds) for k in range(2)]
            share = statistics.median(r[run]["worker_requests"][0] / max(sum(r[run]["worker_requests"]), 1) for r in rounds)
            extra = (f"; each bidder per request it served: {own[0]:.0f} / {own[1]:.0f} µs (batches "
                     f"{statistics.median(r[run]['worker_batch_mean'][0] for r in rounds):.1f} / "
                     f"{statistics.median(r[run]['worker_batch_mean'][1] for r in rounds):.1f}), worker 0 served {share:.0%}")
        print(f"  cores of 2: busy {cores['busy']:.2f}, outside the bench {cores['outside']:.2f}, steal {cores['steal']:.2f}{extra}")
    keys = ("rps", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "errors_status", "errors_timeout")
    results.update({
        "bench": "serve",
        "target_rps": args.rate,
        "rounds": [{run: {k: v for k, v in r[run].items() if k in keys or k in (
            "bid_share", "loop_lag", "cpu_s", "batch_mean", "worker_requests", "worker_batch_mean",
            "worker_cpu_us_per_own_request", "machine_cores")}
                    for run in r} for r in rounds],
        "one_connection_p99_ms": median("one_connection", "p99_us") / 1000,
        "paced_p99_ms": median("paced", "p99_us") / 1000,
        "paced_p50_ms": median("paced", "p50_us") / 1000,
        "paced_rps": median("paced", "rps"),
        "paced_bid_share": median("paced", "bid_share"),
        "service_ceiling_rps": median("closed", "rps"),
        "bare_ceiling_rps": median("bare", "rps"),
        # per round, then the median: the ratio is what carries over between machines
        "service_ceiling_fraction_of_bare": float(statistics.median(r["closed"]["rps"] / r["bare"]["rps"]
                                                                    for r in rounds)),
        "two_workers_over_one": float(statistics.median(r["two_workers"]["rps"] / r["closed"]["rps"] for r in rounds)),
        "floors": {},
    })
    results["floors"] = {
        "one_connection_p99_le_5ms": results["one_connection_p99_ms"] <= 5.0,
        "paced_p99_le_10ms_bidding_ge_90pct": results["paced_p99_ms"] <= 10.0 and results["paced_bid_share"] >= 0.9
        and results["paced_rps"] >= 0.95 * args.rate,
        "ceiling_ge_25pct_of_bare": results["service_ceiling_fraction_of_bare"] >= 0.25,
        "two_workers_ge_1_3x": results["two_workers_over_one"] >= 1.3,
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
