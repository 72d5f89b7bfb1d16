"""``gaelp serve --workers N``: N bidder processes on one port, one budget.

The first process runs every role asked for; the other N − 1 run the bidder role only. All bind
the HTTP port with SO_REUSEPORT, so the kernel spreads connections over them, and all reserve
from the same budget in Redis (atomic Lua: spend never passes it, whoever bids). Each also
serves ``/metrics`` on a port of its own (HTTP port + 1 + k), since a scrape of the shared port
would reach whichever process the kernel picks. SIGINT/SIGTERM stop every worker.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import socket
from collections.abc import Collection
from types import FrameType

from agent_service.config import GaelpConfig

__all__ = ["run_workers"]


def _worker(cfg: GaelpConfig, creatives: int, roles: frozenset[str], metrics_port: int) -> None:
    from agent_service.runtime import event_loop
    from agent_service.runtime.serve import serve_forever
    from agent_service.threads import limit_math_threads

    limit_math_threads()
    event_loop.run(serve_forever(cfg, creatives=creatives, roles=roles, reuse_port=True, metrics_port=metrics_port),
                   cfg.serve.event_loop)


def _free_block(host: str, n: int, tries: int = 100) -> int:
    """A port P with P .. P + n − 1 all free now (the HTTP port and the workers' metrics ports):
    one free port alone left a worker to crash on a taken P + 1 + k."""
    for _ in range(tries):
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port + n - 1 > 65535:
            continue
        try:
            for q in range(port, port + n):
                with socket.socket() as s:
                    s.bind((host, q))
        except OSError:
            continue
        return port
    raise OSError(f"no block of {n} free ports on {host} after {tries} tries")


def run_workers(cfg: GaelpConfig, creatives: int, roles: Collection[str], workers: int) -> int:
    """Run ``workers`` processes until a signal; the exit code is the first worker's."""
    port = cfg.serve.http_port or _free_block(cfg.serve.http_host, workers + 1)
    cfg = cfg.replace("serve", http_port=port)
    ctx = mp.get_context("spawn")  # a fresh interpreter each: no inherited event loop, torch or sockets
    procs = [ctx.Process(target=_worker, args=(cfg, creatives, frozenset(roles) if k == 0 else frozenset({"bidder"}),
                                               port + 1 + k), name=f"gaelp-bidder-{k}", daemon=False)
             for k in range(workers)]
    for p in procs:
        p.start()

    def stop(signum: int, _: FrameType | None) -> None:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                p.terminate()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"gaelp serve: {workers} workers on http://{cfg.serve.http_host}:{port} (SO_REUSEPORT), "
          f"metrics per worker on :{port + 1}..:{port + workers}", flush=True)
    for p in procs:
        p.join()
    return int(procs[0].exitcode or 0)
