"""Event stream throughput of one worker: Kafka (tansu) → the Faust topology → Redis effects.

Setup (not timed): a throwaway redis-server and tansu broker on loopback (tests/servers.py),
``N`` decisions stored in Redis with their reservations and the events that follow them
produced to Kafka, then a final tick on every partition (``tests/stream_world.py``). The worker
runs as ``gaelp serve`` runs it: the Redis identity graph, the configured event loop (uvloop),
startup objects frozen out of the collector.

Measured, in the same run:

1. baseline: the same records read by a plain aiokafka group consumer (no processing) —
   the transport's ceiling on this machine;
2. the worker: the production topology (``stream_apps.topology``) in this process with the
   production Redis adapter, from its first record to its last — the Faust app, or with
   ``--runtime batch`` the ``BatchWorker`` (``serve.stream_runtime = "batch"``; the run ends once
   every record's position is committed, so after its outputs are published); effects are
   exactly once (checked after: spend equals the sum of winning prices, every conversion joined
   once). CPU time per event is printed for the worker process, Redis and the broker.

3. with ``--processes 1,2``: batch workers in one and in two processes of their own
   (``stream_worker_proc.py``, one consumer group) over fresh topics and Redis keys with the same
   events, from the moment every member holds its share to the last position committed — the
   floor asks two workers together for at least 1.3× one.

Prints a table and, as the last line, one JSON object.

    .venv/bin/python bench/bench_stream.py [--decisions 10000] [--runtime faust|batch] [--processes 1,2]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import asyncio
import gc
import json
import random
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent_service.adapters.kafka_bus import KafkaBus
from agent_service.adapters.redis_store import RedisStore
from agent_service.config import GaelpConfig
from agent_service.metrics import Metrics
from agent_service.runtime import event_loop
from agent_service.units import DAY_MS as DAY
from stream_apps.topology import BatchWorker, build_app
from tests.servers import RedisServer, TansuBroker
from tests.stream_world import (
    CAMPAIGN,
    T0,
    Expected,
    input_topics,
    publish_events,
    publish_final_ticks,
    store_decisions,
    stream_config,
    stream_service,
)


async def _raw_consume(bus: KafkaBus, topics: list[str], expected: int) -> tuple[float, dict[tuple[str, int], int]]:
    consumer = bus.consumer(topics, f"raw-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    try:
        got, started = 0, None
        ends: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + 120
        while got < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=5_000)
            if batch and started is None:
                started = time.perf_counter()
            got += len(batch)
            for rec in batch:
                ends[(rec.topic, rec.partition)] = rec.offset + 1
        assert started is not None and got >= expected, (got, expected)
        return got / (time.perf_counter() - started), ends
    finally:
        await consumer.stop()


_PROCESSES: list[int] = []
"""Worker process counts measured after the in-process worker (``--processes``)."""


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _in_processes(k: int, n: int, redis: RedisServer, broker: TansuBroker) -> dict[str, object]:
    """``k`` batch workers in processes of their own (``stream_worker_proc.py``) over fresh topics
    and keys: from the moment every member holds its share to the last position committed."""
    rng = random.Random(1)
    prefix = f"bp{uuid.uuid4().hex[:6]}"
    url = redis.db_url(k)  # a database of its own: no claim of an earlier run is found
    cfg = stream_config(prefix, broker.bootstrap, url, partitions=2)
    t = cfg.topics
    bus = KafkaBus(broker.bootstrap, session_timeout_s=2.0)
    store = RedisStore(url)
    await bus.start()
    await store.start()
    await bus.create_topics([*input_topics(cfg), t.decisions, t.experience, t.dead_letters], t.partitions)
    decisions = await store_decisions(n, cfg, store, rng)
    expected = Expected()
    await publish_events(cfg, bus, decisions, 0, n, rng, expected)
    await publish_final_ticks(cfg, bus, n, expected)
    _, ends = await _raw_consume(bus, [t.auction_results, t.ad_events, t.conversions, t.identity_links], expected.events)
    every = len(input_topics(cfg)) * t.partitions
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "stream_worker_proc.py"), prefix, broker.bootstrap, url,
        str(t.partitions), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(k)]
    held, committed, done = [0] * k, dict[tuple[str, int], int](), [dict[str, float]() for _ in range(k)]

    async def read(i: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            word, _, rest = raw.decode().strip().partition(" ")
            if word == "ASSIGNED":
                held[i] = int(rest)
            elif word == "COMMITTED":
                for topic, part, pos in json.loads(rest):
                    committed[(topic, part)] = max(pos, committed.get((topic, part), 0))
            elif word == "DONE":
                done[i] = json.loads(rest)
    readers = [asyncio.create_task(read(i, p)) for i, p in enumerate(procs)]

    async def until(check, patience: float = 120.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + patience
        while not check():
            assert time.monotonic() < deadline and all(p.returncode is None for p in procs), "worker processes stuck"
            await asyncio.sleep(0.005)
    try:
        await until(lambda: sum(held) == every and all(held))
        await asyncio.sleep(1.0)  # a settled group (a late rebalance would be timed)
        await until(lambda: sum(held) == every and all(held))
        servers = {"redis": redis.proc.pid, "broker": broker.proc.pid}  # type: ignore[union-attr]
        server0 = {name: _proc_cpu(pid) for name, pid in servers.items()}
        started = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"GO\n")
        await until(lambda: all(committed.get(tp, 0) >= end for tp, end in ends.items()))
        elapsed = time.perf_counter() - started
        server_cpu = {name: _proc_cpu(pid) - server0[name] for name, pid in servers.items()}
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"STOP\n")
        await until(lambda: all(done))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        for task in readers:
            task.cancel()
    ledger = await store.budget(CAMPAIGN, T0 // DAY)
    await store.stop()
    await bus.stop()
    events = expected.events
    return {"processes": k, "events": events, "seconds": elapsed, "events_per_s": events / elapsed,
            "worker_cpu_us_per_event": sum(d["cpu_s"] for d in done) / events * 1e6,
            "server_cpu_us_per_event": {name: used / events * 1e6 for name, used in server_cpu.items()},
            "exactly_once": {"spend_expected": expected.spend, "spend_ledger": ledger.spent,
                             "reserved_left": ledger.reserved, "conversions": expected.conversions,
                             "conversions_joined": sum(d["conversions_joined"] for d in done)}}


def _print_commandstats(stats: dict[str, dict[str, float]], events: int) -> None:
    """Redis's time per command since the worker started (``INFO commandstats``; scripts' inner
    commands count both on their own lines and inside ``evalsha``), largest first, to stderr."""
    rows = sorted(stats.items(), key=lambda kv: -kv[1]["usec"])
    total = sum(v["usec"] for k, v in rows if not k.startswith("cmdstat_eval"))
    print(f"{'command':<28} {'calls':>8} {'ms':>8} {'µs/call':>8} {'µs/event':>9}", file=sys.stderr)
    for name, v in rows:
        print(f"{name.removeprefix('cmdstat_'):<28} {int(v['calls']):>8} {v['usec'] / 1e3:>8.1f} "
              f"{v['usec_per_call']:>8.2f} {v['usec'] / events:>9.2f}", file=sys.stderr)
    print(f"{'(commands, scripts excluded)':<28} {'':>8} {total / 1e3:>8.1f}", file=sys.stderr)


def _print_scripts(log: list[dict[str, object]], events: int) -> None:
    """Redis's time per script (the slow log, every command logged), largest first, to stderr."""
    import hashlib

    from agent_service.adapters import redis_identity, redis_lua
    names = {hashlib.sha1(getattr(redis_lua, k).encode()).hexdigest(): k for k in redis_lua.__all__}
    names.update({hashlib.sha1(getattr(redis_identity, k).encode()).hexdigest(): "identity" + k
                  for k in ("_ADD", "_REVOKE", "_RESOLVE")})
    by: dict[str, list[int]] = {}
    for entry in log:
        command = entry["command"]
        words = (command.decode(errors="replace") if isinstance(command, bytes) else str(command)).split(" ", 2)
        if words[0].lower() == "evalsha":
            row = by.setdefault(names.get(words[1], words[1][:12]), [0, 0])
            row[0] += 1
            row[1] += int(entry["duration"])  # type: ignore[call-overload]
    print(f"{'script':<28} {'calls':>8} {'ms':>8} {'µs/call':>8} {'µs/event':>9}", file=sys.stderr)
    for name, (calls, us) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        print(f"{name:<28} {calls:>8} {us / 1e3:>8.1f} {us / calls:>8.1f} {us / events:>9.2f}", file=sys.stderr)


async def main(n: int, runtime: str) -> dict[str, object]:
    rng = random.Random(1)
    with RedisServer() as redis, TansuBroker() as broker:
        prefix = f"bs{uuid.uuid4().hex[:6]}"
        cfg = stream_config(prefix, broker.bootstrap, redis.url, partitions=2)
        t = cfg.topics
        bus = KafkaBus(broker.bootstrap, session_timeout_s=2.0)
        store = RedisStore(redis.url)
        await bus.start()
        await store.start()
        inputs = input_topics(cfg)
        await bus.create_topics([*inputs, t.decisions, t.experience, t.dead_letters], t.partitions)
        decisions = await store_decisions(n, cfg, store, rng)
        expected = Expected()
        await publish_events(cfg, bus, decisions, 0, n, rng, expected)
        await publish_final_ticks(cfg, bus, n, expected)
        events, spend, conversions = expected.events, expected.spend, expected.conversions
        raw_rate, ends = await _raw_consume(bus, [t.auction_results, t.ad_events, t.conversions, t.identity_links], events)

        metrics = Metrics()
        # As `gaelp serve` runs it: identity links into the Redis identity graph, and the
        # long-lived startup objects frozen out of the collector's view.
        svc, graph = stream_service(cfg, store, metrics)
        gc.collect()
        gc.freeze()
        sizes: list[tuple[str, int, float]] = []
        handle = svc.flow.handle

        async def counted(topic, records):  # type: ignore[no-untyped-def]
            began = time.perf_counter()
            try:
                return await handle(topic, records)
            finally:
                sizes.append((topic, len(records), time.perf_counter() - began))
        svc.flow.handle = counted  # type: ignore[method-assign]
        app = BatchWorker(cfg, svc.flow, bus, metrics) if runtime == "batch" else build_app(cfg, svc.flow, bus, metrics)
        committed: dict[tuple[str, int], int] = {}
        if isinstance(app, BatchWorker):  # the run ends once every record's position is committed
            commit = app._consumer.commit

            async def committing(positions=None):  # type: ignore[no-untyped-def]
                await commit(positions)
                committed.update(positions or {})
            app._consumer.commit = committing  # type: ignore[method-assign]
        else:  # Faust commits on its own interval: the run ends when the last record is handled
            committed = ends
        profile = None
        if "--profile" in sys.argv:
            import cProfile
            profile = cProfile.Profile()
            profile.enable()
        servers = {"redis": redis.proc.pid, "broker": broker.proc.pid}  # type: ignore[union-attr]
        if "--commandstats" in sys.argv:  # every command into the slow log too: time per script
            await store.redis.config_resetstat()
            await store.redis.config_set("slowlog-log-slower-than", 0)
            await store.redis.config_set("slowlog-max-len", 1_000_000)
            await store.redis.slowlog_reset()
        await app.start()
        cpu0 = time.process_time()
        server0 = {k: _proc_cpu(pid) for k, pid in servers.items()}
        try:
            started = None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                done = Metrics.value(metrics.events)
                if done and started is None:
                    started = time.perf_counter() - 0.01
                if (done >= events and Metrics.value(metrics.conversions_joined) >= conversions
                        and all(committed.get(tp, 0) >= end for tp, end in ends.items())):
                    break
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - (started or time.perf_counter())
            cpu = time.process_time() - cpu0
            server_cpu = {k: _proc_cpu(pid) - server0[k] for k, pid in servers.items()}
        finally:
            await app.stop()
            if profile is not None:
                import pstats
                profile.disable()
                if "--profile-out" in sys.argv:  # for pstats / snakeviz
                    profile.dump_stats(sys.argv[sys.argv.index("--profile-out") + 1])
                pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(30)
        await graph.close()
        if "--commandstats" in sys.argv:
            await store.redis.config_set("slowlog-log-slower-than", -1)
            _print_commandstats(await store.redis.info("commandstats"), events)
            _print_scripts(await store.redis.slowlog_get(1_000_000), events)
        ledger = await store.budget(CAMPAIGN, T0 // DAY)
        joined = Metrics.value(metrics.conversions_joined)
        await store.stop()
        await bus.stop()
        processes = [await _in_processes(k, n, redis, broker) for k in _PROCESSES]
    rate = events / elapsed
    if "--profile" in sys.argv or "--sizes" in sys.argv:
        by: dict[str, list[float]] = {}
        for topic, k, dt in sizes:
            by.setdefault(topic, []).append(k)
            by.setdefault(topic + " ms", []).append(dt * 1000)
        for key, v in by.items():
            print(f"{key}: calls={len(v)} mean={sum(v) / len(v):.1f} max={max(v):.1f}", file=sys.stderr)
    print(f"{'run':<44} {'events/s':>10}")
    print(f"{'baseline: raw aiokafka group consume':<44} {raw_rate:>10.0f}")
    print(f"{runtime + ' worker + Redis effects (1 worker)':<44} {rate:>10.0f}")
    print(f"{'worker CPU per event (µs)':<44} {cpu / events * 1e6:>10.1f}")
    for server, used in server_cpu.items():
        print(f"{server + ' server CPU per event (µs)':<44} {used / events * 1e6:>10.1f}")
    for run in processes:
        print(f"{'batch workers in ' + str(run['processes']) + ' process(es)':<44} {run['events_per_s']:>10.0f}")
    scaling = {}
    if len(processes) == 2 and processes[0]["processes"] == 1:
        scaling = {"two_vs_one_process": processes[1]["events_per_s"] / processes[0]["events_per_s"]}  # type: ignore[operator]
        print(f"{'two processes / one':<44} {scaling['two_vs_one_process']:>10.2f}")
    return {"bench": "stream", "runtime": runtime, "events": events, "worker_cpu_us_per_event": cpu / events * 1e6,
            "server_cpu_us_per_event": {k: v / events * 1e6 for k, v in server_cpu.items()}, "decisions": n, "seconds": elapsed,
            "events_per_s_per_worker": rate, "baseline_raw_consume_events_per_s": raw_rate,
            "fraction_of_raw_consume": rate / raw_rate, "floor_met": rate >= 20_000,
            "exactly_once": {"spend_expected": spend, "spend_ledger": ledger.spent,
                             "reserved_left": ledger.reserved,
                             "conversions": conversions, "conversions_joined": joined},
            "processes": processes, **scaling}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decisions", type=int, default=10_000)
    ap.add_argument("--runtime", choices=("faust", "batch"), default=GaelpConfig().serve.stream_runtime,
                    help="the stream runtime measured (serve.stream_runtime)")
    ap.add_argument("--profile", action="store_true", help="cProfile the worker (to stderr)")
    ap.add_argument("--profile-out", metavar="PATH", help="with --profile: also dump the stats to PATH")
    ap.add_argument("--processes", default="", metavar="K,K",
                    help="also run batch workers in K processes each (fresh topics and keys), e.g. 1,2")
    ap.add_argument("--sizes", action="store_true", help="print handler calls per topic: batch sizes, ms")
    ap.add_argument("--commandstats", action="store_true",
                    help="print Redis INFO commandstats of the worker's run (reset as it starts; to stderr)")
    args = ap.parse_args()
    _PROCESSES.extend(int(k) for k in args.processes.split(",") if k)
    print(json.dumps(event_loop.run(main(args.decisions, args.runtime), GaelpConfig().serve.event_loop)))  # serve's loop
