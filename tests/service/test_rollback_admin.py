"""Hot-swap and rollback: versions only go up, a second rollback goes further back (never to a
version rolled back from), the lineage survives a restart; admin actions need the token; the
``gaelp admin`` command calls them with the token from the environment."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import torch

from agent_service.adapters.model_lineage import Lineage
from agent_service.adapters.registry import FileRegistry, MemoryRegistry
from agent_service.errors import ModelError

ROOT = Path(__file__).resolve().parents[2]


def _publish(reg, tag: float) -> int:  # type: ignore[no-untyped-def]
    return reg.publish({"w": torch.tensor([tag])})


def _served_tag(reg) -> float:  # type: ignore[no-untyped-def]
    return float(reg.load(reg.latest_version())["w"][0])


def test_second_rollback_goes_further_back_never_to_the_bad_version(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    for tag in (1.0, 2.0, 3.0):
        _publish(reg, tag)
    lin = Lineage(reg, tmp_path / "LINEAGE.json")
    first = lin.rollback()
    assert (first.bad_origin, first.restored_origin, first.now_serving) == (3, 2, 4) and _served_tag(reg) == 2.0
    second = Lineage(reg, tmp_path / "LINEAGE.json").rollback()  # a restarted service keeps the lineage
    assert (second.bad_origin, second.restored_origin) == (2, 1) and _served_tag(reg) == 1.0
    with pytest.raises(ModelError, match="nothing to roll back to"):
        Lineage(reg, tmp_path / "LINEAGE.json").rollback()
    assert reg.versions() == sorted(reg.versions()) and reg.latest_version() == 5  # versions only go up


def test_rollback_after_a_newer_version_skips_bad_ones() -> None:
    reg = MemoryRegistry()
    for tag in (1.0, 2.0):
        _publish(reg, tag)
    lin = Lineage(reg)
    lin.rollback()                      # 2 bad → serves 1 as v3
    _publish(reg, 4.0)                  # the learner publishes v4
    result = lin.rollback()             # 4 bad → newest good earlier origin is 1 (2 is bad, 3 is a copy)
    assert result.restored_origin == 1 and _served_tag(reg) == 1.0


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Recorder.seen.append((self.path, self.headers.get("Authorization", ""), body))
        ok = self.headers.get("Authorization") == "Bearer tok"
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(b'{"ok": true}' if ok else b'{"error": "missing or wrong admin token"}')

    def log_message(self, *args: object) -> None:
        return None


async def test_admin_command_sends_the_token_from_the_environment() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "agent_service.cli", "admin", *args, "--url", url],
                                  cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)

        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, lambda: run({"GAELP_ADMIN_TOKEN": "tok"}, "rollback"))
        assert ok.returncode == 0, ok.stderr
        wrong = await loop.run_in_executor(None, lambda: run({"GAELP_ADMIN_TOKEN": "nope"}, "budget",
                                                             "--daily-usd", "5"))
        assert wrong.returncode == 1 and "401" in wrong.stderr
        env = {k: v for k, v in os.environ.items() if k != "GAELP_ADMIN_TOKEN"}
        missing = await loop.run_in_executor(None, lambda: subprocess.run(
            [sys.executable, "-m", "agent_service.cli", "admin", "rollback", "--url", url], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=60))
        assert missing.returncode == 2 and "GAELP_ADMIN_TOKEN" in missing.stderr
        assert [(p, a) for p, a, _ in _Recorder.seen] == [("/admin/rollback", "Bearer tok"),
                                                          ("/admin/budget", "Bearer nope")]
    finally:
        server.shutdown()
