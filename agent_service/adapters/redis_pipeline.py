"""Script calls in one Redis round trip, without redis-py's extra one.

A script registered on a redis-py pipeline (``script(keys, args, client=pipe)``) makes every
``execute`` send SCRIPT EXISTS first: a second round trip per batch. Here EVALSHA is queued
directly. A call answered NOSCRIPT (Redis restarted and lost its script cache) did not run; its
script is loaded and only those calls are sent again, so no effect runs twice.

``HiredisPackConnection`` packs commands with hiredis's C packer: redis-py's synchronous client
does so when hiredis is installed, its asyncio client packs in Python — a third of a stream
worker's time (a batch's script calls carry ~11 arguments per event; ``bench/README.md``).
A call's trailing :class:`RespArgs` is sent as it is: arguments the caller wrote in the wire form
already (hiredis copies a bulk string at ~1 ns per byte, so a result's ~0.4 KB claim cost more
to pack than to build; ``bench/README.md``, "Stream worker CPU").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from hiredis import pack_command as _hiredis_pack  # a pinned dependency (pyproject.toml)
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from agent_service.errors import StoreError

__all__ = ["HiredisPackConnection", "RespArgs", "bulk", "read_each", "run_scripts"]

ScriptCall = tuple[AsyncScript, Sequence[Any], Sequence[Any]]
"""(registered script, keys, args)."""


_BULK = [b"$%d" % n for n in range(1 << 12)]


def bulk(n: int) -> bytes:
    """A bulk string's header (``$<n>``, without its CRLF) for a value of ``n`` bytes."""
    return _BULK[n] if n < 4096 else b"$%d" % n


class RespArgs:
    """``count`` command arguments already in Redis's wire form (RESP bulk strings, each
    ``$<len>\\r\\n<bytes>\\r\\n``), the last argument of a call packed by
    :class:`HiredisPackConnection` (no other connection knows it: check with ``packs_resp``).

    :param count: how many arguments ``data`` holds.
    :param data: their wire form, e.g. ``b"\\r\\n".join([bulk(len(a)), a, ..., b""])``.
    """

    __slots__ = ("count", "data")

    def __init__(self, count: int, data: bytes) -> None:
        self.count, self.data = count, data


async def run_scripts(client: aioredis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Results of ``calls`` in order (one pipeline, not a transaction); raises the first error."""
    if not calls:
        return []
    if len(calls) == 1:  # one call needs no pipeline (the script object handles NOSCRIPT itself)
        script, keys, args = calls[0]
        return [await script(keys=list(keys), args=list(args))]
    results = await _evalsha_all(client, calls)
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
            script.sha = await client.script_load(script.script)
        for i, r in zip(missing, await _evalsha_all(client, [calls[i] for i in missing]), strict=True):
            results[i] = r
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results


async def read_each(client: aioredis.Redis, command: str, keys: Sequence[str], failed: str) -> list[Any]:
    """``command key`` for every key, in one pipeline round trip; a Redis error is a
    :class:`StoreError` ``"<failed>: <error>"``."""
    if not keys:
        return []
    try:
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                getattr(pipe, command)(key)
            return list(await pipe.execute())
    except RedisError as exc:
        raise StoreError(f"{failed}: {exc}") from exc


async def _evalsha_all(client: aioredis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    async with client.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))


class HiredisPackConnection(aioredis.Connection):
    """An asyncio connection that packs commands in C (see the module docstring); anything hiredis
    does not pack the same way (a command name with a space, a type it rejects) goes through
    redis-py's own packer, which also raises its usual errors."""

    packs_resp = True
    """Takes a trailing :class:`RespArgs` (a redis-py connection does not)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if args and type(args[-1]) is RespArgs:
            tail: RespArgs = args[-1]
            packed = b"".join(self.pack_command(*args[:-1]))  # "*<n>\r\n..." of the other arguments
            return [b"*%d%b" % (len(args) - 1 + tail.count, packed[packed.index(b"\r\n"):]), tail.data]
        head = args[0] if args else None
        if not (isinstance(head, str) and " " not in head or isinstance(head, bytes) and b" " not in head):
            return super().pack_command(*args)  # redis-py splits "CONFIG GET"-style names
        try:
            return [_hiredis_pack(args)]
        except TypeError:
            return super().pack_command(*args)
