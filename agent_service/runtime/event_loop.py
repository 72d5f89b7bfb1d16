"""The event loop the long-running commands run on.

``uvloop`` (libuv, in C) runs the same asyncio code with less overhead per socket event and
callback than the standard loop; the bid endpoint spends most of its time there (HTTP, Redis
and Kafka sockets), so ``gaelp serve`` uses it by default. ``serve.event_loop = "asyncio"``
selects the standard loop (e.g. to rule the loop out when debugging).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

__all__ = ["cancel_all", "poll_until_idle", "run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], kind: str = "uvloop") -> T:
    """Run ``main`` to completion on a new event loop of ``kind`` ("uvloop" or "asyncio")."""
    if kind == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    if kind != "asyncio":
        raise ValueError(f"unknown event loop {kind!r} (expected 'uvloop' or 'asyncio')")
    return asyncio.run(main)


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel the background tasks, then wait until each has ended (its cancellation swallowed)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def poll_until_idle(poll: Callable[[], Awaitable[int]]) -> int:
    """Call ``poll`` until it handles nothing; the total it handled (a consumer's ``drain``)."""
    total = 0
    while n := await poll():
        total += n
    return total
