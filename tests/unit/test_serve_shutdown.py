"""Shutdown of `gaelp serve` goes on past a part that hangs: every other part still stops and the
process exits (a bidder once outlived SIGTERM by more than 60 s)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agent_service.runtime import serve
from agent_service.runtime.serve import ServeRuntime


class _Bus:
    stopped = False

    async def stop(self) -> None:
        self.stopped = True


async def test_a_part_that_hangs_is_logged_and_left_behind(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(serve, "_STOP_STEP_S", 0.05)
    rt = ServeRuntime.__new__(ServeRuntime)  # only what stop() touches
    stopped: list[str] = []

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def fails() -> None:
        raise RuntimeError("broken")

    async def fine() -> None:
        stopped.append("fine")

    rt._tasks, rt._stops = [asyncio.create_task(asyncio.Event().wait())], [fine, fails, hangs]
    rt.sink, rt.identity_graph, rt.bus, rt._needs_store = None, None, _Bus(), False
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(rt.stop(), 5)
    assert stopped == ["fine"] and rt.bus.stopped and rt._tasks[0].cancelled()
    assert "hangs did not stop within" in caplog.text and "fails failed to stop" in caplog.text
